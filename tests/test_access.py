"""Access control on an S3 server that enforces IAM (a moto server in its own process, auth on): read-only
credentials cannot write and every step says so plainly before any work; writers can; readers can read."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from somocloud import stores

from .conftest import tiny_config

BUCKET = "somocloud-access"
POLICIES = {
    "writer": ["s3:*"],
    "reader": ["s3:GetObject", "s3:ListBucket"],
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def iam_s3() -> Iterator[tuple[str, dict[str, dict[str, str]]]]:
    """A moto server process with a bucket, a writer and a reader; IAM auth is switched on last."""
    import boto3
    import requests

    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):
            try:
                requests.get(endpoint, timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        admin = {"aws_access_key_id": "admin", "aws_secret_access_key": "admin", "region_name": "us-east-1"}
        boto3.client("s3", endpoint_url=endpoint, **admin).create_bucket(Bucket=BUCKET)
        iam = boto3.client("iam", endpoint_url=endpoint, **admin)
        keys = {}
        for user, actions in POLICIES.items():
            iam.create_user(UserName=user)
            policy = {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}],
            }
            iam.put_user_policy(UserName=user, PolicyName=f"{user}-s3", PolicyDocument=json.dumps(policy))
            key = iam.create_access_key(UserName=user)["AccessKey"]
            keys[user] = {
                "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
            }
        requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=5).raise_for_status()
        yield endpoint, keys
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def as_user(iam_s3, monkeypatch: pytest.MonkeyPatch):
    """Switch this process's S3 identity (environment only, as in production)."""
    endpoint, keys = iam_s3

    def switch(user: str) -> dict[str, str]:
        env = {"AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1", **keys[user]}
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()  # fsspec caches filesystems per storage options
        return env

    return switch


def test_reader_cannot_write_and_is_told_plainly(as_user) -> None:
    as_user("writer")
    stores.write_text(f"s3://{BUCKET}/shared/readme.txt", "hello")
    as_user("reader")
    assert stores.read_text(f"s3://{BUCKET}/shared/readme.txt") == "hello"
    with pytest.raises(stores.StoreAccessError, match=r"access denied when writing.*read-only credentials"):
        stores.check_writable(f"s3://{BUCKET}/run/product/soil_moisture.zarr")
    with pytest.raises(PermissionError):  # not only the probe: a real write is refused too
        stores.write_text(f"s3://{BUCKET}/shared/other.txt", "no")


def test_writer_passes_the_preflight_and_leaves_no_probe(as_user) -> None:
    as_user("writer")
    url = f"s3://{BUCKET}/run/product/soil_moisture.zarr"
    stores.check_writable(url)
    assert not stores.exists(url + stores.WRITE_PROBE)


def test_step_with_read_only_credentials_fails_before_any_work(as_user, tmp_path: Path) -> None:
    env = as_user("reader")
    cfg = tiny_config(f"s3://{BUCKET}/cli")
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    proc = subprocess.run(
        [sys.executable, "-m", "somocloud", "synthetic", "-c", str(cfg_file), "--no-progress"],
        capture_output=True, text=True, timeout=300, env={**os.environ, **env},
    )  # fmt: skip
    assert proc.returncode == 1
    assert f"s3://{BUCKET}/cli/inputs/era5_hourly.zarr: access denied when writing" in proc.stderr
    assert "read-only credentials" in proc.stderr
    assert env["AWS_SECRET_ACCESS_KEY"] not in proc.stdout + proc.stderr
    as_user("writer")
    assert stores.list_files(f"s3://{BUCKET}/cli") == []  # nothing was written
