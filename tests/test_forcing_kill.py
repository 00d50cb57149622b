"""Killing `somocloud forcing` midway and rerunning it: only the missing day tasks are redone and the cubes
are byte-identical to an undisturbed build.

The real CLI runs in its own session (`start_new_session=True`) with a 1-worker LocalCluster on a small
ERA5-layout hourly store of random values, one day per task. As soon as some but not all day tasks of stage
1 are marked, the whole session (CLI, scheduler, nanny, worker) is SIGKILLed; the test fails unless a kill
really lands midway, and unless no process of that session survives it."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml

from somocloud import stores
from somocloud.forcing.build import intermediate_url
from somocloud.forcing.sources import ERA5_UNITS
from somocloud.layers import FORCING_VARIABLES, REFERENCE_VARIABLES
from tests.processes import Runner, kill_midway, marker_state, running, store_files

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

N_DAYS = 30  # day tasks (forcing.days_per_task = 1): lookback_start .. period.end
SEQ_LENGTH = 21
FIRST_DAY = dt.date(2020, 1, 1)  # lookback_start = period.start - (seq_length - 1)
LAST_DAY = FIRST_DAY + dt.timedelta(days=N_DAYS - 1)
PERIOD = {"start": str(FIRST_DAY + dt.timedelta(days=SEQ_LENGTH - 1)), "end": str(LAST_DAY)}
GRID = {"resolution": 1.0, "lat_min": 10.0, "lat_max": 13.0, "lon_min": 1.0, "lon_max": 5.0}
SRC_LAT = np.arange(14.5, 8.0, -1.0)  # ERA5 layout: latitude descending, longitude 0-360
SRC_LON = np.arange(0.5, 8.0, 1.0)
HOURS = pd.date_range(FIRST_DAY, LAST_DAY + dt.timedelta(days=2), freq="h", inclusive="left")
# Plausible mean and spread of each hourly ERA5 variable (random values: every day and cell differs).
HOURLY = {
    "2m_temperature": (280.0, 10.0),
    "2m_dewpoint_temperature": (270.0, 5.0),
    "surface_pressure": (1.0e5, 1.0e3),
    "skin_temperature": (285.0, 10.0),
    "total_precipitation": (5e-4, 5e-4),
    "surface_solar_radiation_downwards": (1.0e6, 5.0e5),
    "surface_net_solar_radiation": (8.0e5, 3.0e5),
    "surface_net_thermal_radiation": (-3.0e5, 1.0e5),
    "volumetric_soil_water_layer_1": (0.2, 0.05),
    "volumetric_soil_water_layer_2": (0.25, 0.05),
    "volumetric_soil_water_layer_3": (0.3, 0.05),
}
PROVENANCE_ATTRS = ("somocloud_config", "somocloud_inputs", "somocloud_content_id")
"""Root attributes that name the run's own paths: the only metadata allowed to differ between roots."""
DAY_VARIABLES = (*FORCING_VARIABLES, *REFERENCE_VARIABLES)


def write_source(url: str) -> None:
    """An ERA5-layout hourly store, one chunk per 24 hours of whole maps."""
    rng = np.random.default_rng(11)
    shape = (len(HOURS), SRC_LAT.size, SRC_LON.size)
    ds = xr.Dataset(
        {
            var: (
                ("time", "latitude", "longitude"),
                (mean + spread * rng.standard_normal(shape)).astype("float32"),
                {"units": ERA5_UNITS[var], "long_name": var},
            )
            for var, (mean, spread) in HOURLY.items()
        },
        coords={"time": HOURS.values, "latitude": SRC_LAT, "longitude": SRC_LON},
    )
    stores.write_zarr(
        ds, url, encoding={v: {"chunks": (24, SRC_LAT.size, SRC_LON.size)} for v in ds.data_vars}
    )


def write_config(path: Path, root: Path, source: str) -> Path:
    data = {
        "grid": GRID,
        "period": PERIOD,
        "model": {"seq_length": SEQ_LENGTH, "cascade": False},
        "stores": {"root": str(root), "forcing_source": source},
        "forcing": {"days_per_task": 1, "tile_size": 2, "keep_intermediate": True},
        "cluster": {"kind": "local", "n_workers": 1, "threads_per_worker": 1},
    }
    path.write_text(yaml.safe_dump(data))
    return path


def day_ids() -> set[str]:
    return {f"days-{FIRST_DAY + dt.timedelta(days=i):%Y%m%d}-0001" for i in range(N_DAYS)}


def day_index(task_id: str) -> int:
    return (dt.datetime.strptime(task_id.split("-")[1], "%Y%m%d").date() - FIRST_DAY).days


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[Runner]:
    with running(tmp_path, "forcing") as r:
        yield r


# --- stores ----------------------------------------------------------------------------------------------


def shard_times(inter: str, day: int) -> dict[str, int]:
    """Modification times (ns) of the intermediate's shard objects of day `day` (days_per_task = 1)."""
    out = {}
    for name in DAY_VARIABLES:
        folder = Path(inter, name, "c", str(day))
        for path in folder.rglob("*"):
            if path.is_file():
                out[str(path)] = path.stat().st_mtime_ns
    return out


def assert_same_store(url: str, clean_url: str) -> None:
    """Same objects, byte for byte, except for the provenance attributes in the root metadata."""
    files, clean = store_files(url), store_files(clean_url)
    assert sorted(files) == sorted(clean), url
    chunks = [k for k in files if os.path.basename(k) != "zarr.json"]
    assert len(chunks) > 9, f"{url}: only {len(chunks)} chunk objects"
    differ = [k for k in files if k != "zarr.json" and files[k] != clean[k]]
    assert not differ, f"{url}: objects differ from the undisturbed build: {differ}"
    root, clean_root = json.loads(files["zarr.json"]), json.loads(clean["zarr.json"])
    for meta in (root, clean_root):
        for key in PROVENANCE_ATTRS:
            meta.get("attributes", {}).pop(key, None)
    assert root == clean_root, f"{url}: root metadata differs beyond provenance"

    ds, ref = stores.open_zarr(url, chunks=None), stores.open_zarr(clean_url, chunks=None)
    assert set(ds.data_vars) == set(ref.data_vars) and ds.sizes["time"] == N_DAYS
    for name in ds.data_vars:
        values = ds[name].values
        assert np.isfinite(values).all(), f"{url}: {name} has missing values"
        np.testing.assert_array_equal(values, ref[name].values, err_msg=f"{url}: {name}")
    for name in ds.coords:
        np.testing.assert_array_equal(ds[name].values, ref[name].values, err_msg=f"{url}: {name}")


# --- the test --------------------------------------------------------------------------------------------


def test_killed_build_resumes_only_missing_day_tasks_to_identical_cubes(
    tmp_path: Path, runner: Runner
) -> None:
    source = str(tmp_path / "era5.zarr")
    write_source(source)
    root = tmp_path / "resumed"
    config = write_config(tmp_path / "resumed.yaml", root, source)
    forcing = str(root / "work" / "forcing.zarr")
    inter = intermediate_url(forcing)
    markers = stores.markers_for(inter)

    # Kill once some day tasks are marked; if stage 1 got finished anyway, try again earlier.
    attempts = []
    for trigger in (N_DAYS // 4, 1, 1):
        shutil.rmtree(root, ignore_errors=True)
        midway, done, why = kill_midway(runner, config, markers, trigger, N_DAYS)
        attempts.append(why)
        if midway:
            break
    else:
        pytest.fail("no kill landed midway through the day tasks:\n" + "\n".join(attempts))

    assert done <= day_ids()
    before = marker_state(markers)
    assert set(before) == done
    shards_before = {task: shard_times(inter, day_index(task)) for task in done}
    assert all(shards_before.values()), "a marked day task has no shard objects"
    # Stage 2 never started: no tile is marked in either cube.
    assert not stores.markers_for(forcing).finished()
    assert not stores.markers_for(str(root / "work" / "reference_sm.zarr")).finished()

    runner.run(config)

    after = marker_state(markers)
    assert set(after) == day_ids(), "the rerun did not finish every day task"
    rewritten = sorted(t for t in done if after[t] != before[t])
    assert not rewritten, f"day tasks marked before the kill were redone: {rewritten}"
    redone_shards = sorted(t for t in done if shard_times(inter, day_index(t)) != shards_before[t])
    assert not redone_shards, f"shards of day tasks marked before the kill were rewritten: {redone_shards}"
    assert all(shard_times(inter, day_index(t)) for t in day_ids() - done)

    # An undisturbed build of the same config (same source) in another root.
    clean_root = tmp_path / "clean"
    runner.run(write_config(tmp_path / "clean.yaml", clean_root, source))
    for name in ("forcing.zarr", "reference_sm.zarr", "forcing.zarr.daily-maps.zarr"):
        assert_same_store(str(root / "work" / name), str(clean_root / "work" / name))
