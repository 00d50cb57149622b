"""Shared fixtures: a real S3 endpoint (moto's ThreadedMotoServer), tiny run configs, a Dask client."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest

from somocloud.config import RunConfig, config_from_dict

# A distinctive secret: tests grep every output and log for it.
SECRET_KEY = "s3cr3t-SOMOCLOUD-test-key-do-not-leak"
ACCESS_KEY = "somocloudtestaccess"
SESSION_TOKEN = "t0ken-SOMOCLOUD-planted-session-token"
BUCKET = "somocloud-test"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on loopback, with credentials and endpoint only in the environment."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_SESSION_TOKEN": SESSION_TOKEN,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
    try:
        yield endpoint
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def tiny_config(root: str, **sections: Any) -> RunConfig:
    """A tiny world that runs end to end in about a minute on 2 cores."""
    data: dict[str, Any] = {
        "name": "somocloud-tiny",
        "grid": {"resolution": 0.25, "lat_min": 40.0, "lat_max": 42.0, "lon_min": -100.0, "lon_max": -97.5},
        "period": {"start": "2020-01-01", "end": "2020-12-31"},
        "stores": {"root": root},
        "synthetic": {"seed": 7, "n_stations": 24},
        "model": {"hidden_size": 16, "dropout": 0.1, "seq_length": 45},
        "train": {
            "epochs": 4,
            "batch_size": 64,
            "learning_rate": 0.01,
            "max_windows_per_epoch": 2048,
            "n_members": 2,
            "holdout_fraction": 0.25,
        },
        "forcing": {"tile_size": 5, "days_per_task": 100},
        "predict": {"tile_size": 5, "time_chunk": 183, "chunk_days": 61, "batch_windows": 2048},  # sharded
        "publish": {"collection_id": "somocloud-tiny"},
        "cluster": {"kind": "local", "n_workers": 2, "threads_per_worker": 1},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return config_from_dict(data, "(tiny)")


@pytest.fixture(scope="session")
def dask_client() -> Iterator[Any]:
    """A 2-process LocalCluster shared by the tests that need distributed work."""
    from somocloud.cluster import make_client
    from somocloud.config import ClusterConfig

    client = make_client(ClusterConfig(kind="local", n_workers=2, threads_per_worker=1))
    cluster = client.cluster
    try:
        yield client
    finally:
        client.close()
        cluster.close()
