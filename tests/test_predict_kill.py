"""Failures during `predict`: a Dask worker killed mid-run, and the driver killed mid-run then rerun.

World: 8 x 8 cells of 1° in tiles of 4 (4 tiles), 120 product days in chunks of 20 → 24 tasks, a
random-weight EA-LSTM artifact (seq_length 30, hidden 16, 2 members, 3 layers, no cascade). Both tests
fail unless the failure really lands midway (some but not all tasks marked), and both compare the product
with an undisturbed run: every chunk object byte for byte."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import xarray as xr
import yaml

from somocloud import stores
from somocloud.config import RunConfig, config_from_dict
from somocloud.context import Context
from somocloud.grid import Grid
from somocloud.layers import DEPTHS, DYNAMIC_INPUTS, FORCING_VARIABLES, STATIC_INPUTS
from somocloud.model.artifact import LayerCard, ModelCard, save_artifact
from somocloud.model.ealstm import EALSTM
from somocloud.model.features import Scaler
from somocloud.predict import predict
from tests.processes import Runner, kill_midway, marker_state, running, store_files
from tests.test_predict import _one_torch_thread, write_random_forcing

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
__all__ = ["_one_torch_thread"]  # the in-process run uses one torch thread, as Dask workers do

SEQ = 30
START, END = dt.date(2003, 1, 1), dt.date(2003, 4, 30)  # 120 days
GRID = {"resolution": 1.0, "lat_min": 30.0, "lat_max": 38.0, "lon_min": 10.0, "lon_max": 18.0}
TILE, TIME_CHUNK = 4, 20
N_TASKS = 4 * 6


def config_data(root: Path, product: Path) -> dict[str, Any]:
    return {
        "name": "predict-kill",
        "grid": GRID,
        "period": {"start": START.isoformat(), "end": END.isoformat()},
        "stores": {"root": str(root), "product": str(product)},
        "model": {"hidden_size": 16, "seq_length": SEQ, "cascade": False},
        "predict": {"tile_size": TILE, "time_chunk": TIME_CHUNK, "batch_windows": 64},
        "cluster": {"kind": "local", "n_workers": 2, "threads_per_worker": 1},
    }


def make_config(root: Path, product: Path) -> RunConfig:
    return config_from_dict(config_data(root, product))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Forcing, statics (all land) and a random-weight artifact under one root."""
    root = tmp_path_factory.mktemp("predict-kill")
    cfg = make_config(root, root / "unused.zarr")
    grid = Grid.from_config(cfg.grid)
    rng = np.random.default_rng(7)
    forcing = write_random_forcing(cfg, grid, rng)
    statics = {n: rng.uniform(0.1, 1.0, size=grid.shape).astype("float32") for n in STATIC_INPUTS}
    sds = xr.Dataset(
        {n: (("lat", "lon"), v) for n, v in statics.items()}
        | {"land_mask": (("lat", "lon"), np.ones(grid.shape, dtype=bool))},
        coords=grid.coords(),
    )
    stores.write_zarr(sds, cfg.store("statics"))
    scaler = Scaler.fit(
        {"log_tp": np.log1p(forcing["tp"])}
        | {n: forcing[n] for n in FORCING_VARIABLES if n != "tp"}
        | statics
    )
    weights, layers = {}, []
    for k in range(3):
        for m in range(2):
            torch.manual_seed(10 * k + m)
            net = EALSTM(len(DYNAMIC_INPUTS), len(STATIC_INPUTS), 16)
            with torch.no_grad():
                for p in net.parameters():
                    p.normal_(0, 0.3)
            weights[f"layer{k + 1}/member{m}.pt"] = net.state_dict()
        layers.append(
            LayerCard(float(DEPTHS[k]), list(DYNAMIC_INPUTS), list(STATIC_INPUTS), 0.25, 0.08,
                      members=[f"layer{k + 1}/member{m}.pt" for m in range(2)], seeds=[0, 1])
        )  # fmt: skip
    save_artifact(
        cfg.store("model"), ModelCard(16, 0.5, SEQ, 5.0, "exact", scaler.to_dict(), layers), weights, {}
    )
    return root


@pytest.fixture(scope="module")
def clean(world: Path) -> str:
    """An undisturbed run of the same inputs (one process, no Dask)."""
    url = world / "clean.zarr"
    predict(make_config(world, url), Context(parts=(1, 1), show_progress=False))
    return str(url)


def chunk_objects(url: str) -> dict[str, bytes]:
    """The product's data chunk objects (metadata, whose provenance names the run's paths, left out)."""
    return {k: v for k, v in store_files(url).items() if os.path.basename(k) != "zarr.json"}


def assert_same_product(url: str, clean_url: str) -> None:
    chunks, ref = chunk_objects(url), chunk_objects(clean_url)
    assert len(ref) >= 2 * N_TASKS, f"{clean_url}: only {len(ref)} chunk objects"
    assert sorted(chunks) == sorted(ref)
    differ = sorted(k for k in chunks if chunks[k] != ref[k])
    assert not differ, f"{url}: chunks differ from the undisturbed run: {differ[:5]}"
    assert stores.zarr_attrs(url)["complete"] is True
    a, b = stores.open_zarr(url, chunks=None), stores.open_zarr(clean_url, chunks=None)
    np.testing.assert_array_equal(a["soil_moisture"].values, b["soil_moisture"].values)
    assert np.isfinite(a["soil_moisture"].values).all()


def test_worker_killed_mid_run_gives_the_same_product(world: Path, clean: str) -> None:
    """`client.run(os._exit, ...)` on a worker while tasks are marked: its nanny restarts it, the worker
    plugin loads the model again, lost tasks run elsewhere, and the product is bit-identical."""
    from somocloud.cluster import make_client

    url = world / "worker-killed.zarr"
    cfg = make_config(world, url)
    markers = stores.markers_for(str(url))
    client = make_client(cfg.cluster)
    try:
        before = set(client.scheduler_info()["workers"])  # addresses: a restarted worker gets a new one
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["result"] = predict(cfg, Context(client=client, show_progress=False))
            except BaseException as err:  # reported by the test thread
                outcome["error"] = err

        thread = threading.Thread(target=run)
        thread.start()
        killed_at = None
        deadline = time.monotonic() + 120
        while thread.is_alive() and time.monotonic() < deadline:
            n = len(markers.finished())
            if n >= 3:
                victim = sorted(client.scheduler_info()["workers"])[0]
                # the worker exits before it can answer: the call fails, the kill does not
                with contextlib.suppress(Exception):
                    client.run(os._exit, 1, workers=[victim])
                killed_at = n
                break
            time.sleep(0.01)
        thread.join(timeout=240)
        assert not thread.is_alive(), "predict did not finish after the worker was killed"
        assert "error" not in outcome, outcome.get("error")
        assert killed_at is not None and killed_at < N_TASKS, f"no kill landed midway (killed at {killed_at})"
        # the victim really died and was replaced
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            after = set(client.scheduler_info()["workers"])
            if after - before:
                break
            time.sleep(0.2)
        assert after - before, "no worker was replaced: the kill did not land"
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()
    assert len(markers.finished()) == N_TASKS
    assert_same_product(str(url), clean)


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[Runner]:
    with running(tmp_path, "predict") as r:
        yield r


def chunk_times(url: str) -> dict[str, int]:
    out = {}
    for dirpath, _, files in os.walk(url):
        for f in files:
            if f != "zarr.json":
                path = Path(dirpath, f)
                out[os.path.relpath(path, url)] = path.stat().st_mtime_ns
    return out


def test_driver_killed_mid_run_resumes_only_unmarked_tasks(
    world: Path, clean: str, runner: Runner, tmp_path: Path
) -> None:
    url = world / "driver-killed.zarr"
    config = tmp_path / "predict.yaml"
    config.write_text(yaml.safe_dump(config_data(world, url)))
    markers = stores.markers_for(str(url))
    attempts = []
    for trigger in (N_TASKS // 4, 2, 1):
        stores.remove(str(url))
        markers.clear()
        midway, done, why = kill_midway(runner, config, markers, trigger, N_TASKS)
        attempts.append(why)
        if midway:
            break
    else:
        pytest.fail("no kill landed midway through the tasks:\n" + "\n".join(attempts))
    assert stores.zarr_attrs(str(url))["complete"] is False
    before = marker_state(markers)
    times = chunk_times(str(url))
    output = runner.run(config)
    assert f"{N_TASKS - len(done)} of {N_TASKS} tasks pending" in output
    after = marker_state(markers)
    assert len(after) == N_TASKS
    rewritten = sorted(t for t in done if after[t] != before[t])
    assert not rewritten, f"tasks marked before the kill were redone: {rewritten}"
    # chunk objects that existed before the rerun and belong to marked tasks were not rewritten
    now = chunk_times(str(url))
    kept = {k: v for k, v in times.items() if _task_of(k) in done}
    assert kept and all(now[k] == v for k, v in kept.items())
    assert_same_product(str(url), clean)


def _task_of(chunk_key: str) -> str | None:
    """The task id that writes data chunk `<var>/c/<time>/<depth>/<lat>/<lon>` (None for coordinates)."""
    parts = chunk_key.split(os.sep)
    if len(parts) != 6:
        return None
    t, i, j = int(parts[2]), int(parts[4]), int(parts[5])
    return f"tile-{i * TILE:05d}-{j * TILE:05d}-time-{t * TIME_CHUNK:06d}-{(t + 1) * TIME_CHUNK:06d}"  # 120 = 6 x 20
