"""The whole data flow on a tiny synthetic world: verb by verb through the CLI, and on a moto S3 server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from somocloud import pipeline, steps, stores
from somocloud.context import Context

from .conftest import BUCKET, SECRET_KEY, tiny_config

pytestmark = pytest.mark.slow


def _check_product(product: xr.Dataset, land: np.ndarray) -> None:
    sm = product["soil_moisture"].values  # (time, depth, lat, lon)
    assert sm.shape[1] == 3
    assert np.isfinite(sm[:, :, land]).all(), "product must be finite over land"
    assert np.isnan(sm[:, :, ~land]).all(), "product must be NaN over sea"
    assert (sm[:, :, land] >= 0).all() and (sm[:, :, land] <= 1).all()
    assert product.attrs["complete"] is True
    assert product["soil_moisture"].attrs["standard_name"] == "volume_fraction_of_condensed_water_in_soil"


def _heldout_truth_anomaly_r(summary: dict) -> float:
    """Median anomaly r of the product against the true layer-1 soil moisture at held-out stations."""
    rows = [
        r
        for r in summary["rows"]
        if r["reference"] == "truth" and r["split"] == "holdout" and r["depth"] == 0.05
    ]
    assert rows, summary
    return float(rows[0]["anomaly_r"])


def test_every_verb_runs_alone_through_the_cli(tmp_path: Path) -> None:
    cfg = tiny_config(str(tmp_path / "run"))
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    for verb in ["synthetic", *steps.RUN_ORDER]:
        proc = subprocess.run(
            [sys.executable, "-m", "somocloud", verb, "-c", str(cfg_file), "--no-progress"],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, f"{verb} failed:\n{proc.stderr[-3000:]}"
    statics = xr.open_zarr(cfg.store("statics"))
    product = xr.open_zarr(cfg.store("product"))
    _check_product(product, statics["land_mask"].values.astype(bool))
    for name in ("forcing", "reference_sm", "statics", "insitu", "targets", "product"):
        attrs = stores.zarr_attrs(cfg.store(name))
        assert json.loads(attrs["somocloud_config"])["name"] == "somocloud-tiny", name
        assert attrs["somocloud_version"] and len(attrs["somocloud_content_id"]) == 64, name
    manifest = stores.read_json(stores.join(cfg.store("model"), "manifest.json"))
    assert product.attrs["model_content_id"] == manifest["content_id"]
    summary = json.loads(Path(cfg.store("evaluation"), "summary.json").read_text())
    assert _heldout_truth_anomaly_r(summary) > 0.3
    assert json.loads(Path(cfg.store("stac"), "collection.json").read_text())["id"] == "somocloud-tiny"
    # the closing hint opens the sharded product one shard (task) per dask chunk
    hint = pipeline.summary(cfg, {"product": cfg.store("product")})
    assert "chunks={'time': 183, 'lat': 5, 'lon': 5}" in hint


def test_tiny_world_on_s3_opened_by_analysts(
    s3_endpoint: str, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    import intake

    caplog.set_level("DEBUG")
    root = f"s3://{BUCKET}/e2e"
    cfg = tiny_config(root)
    with Context(show_progress=True) as ctx:
        outputs = pipeline.demo(cfg, ctx)
    assert outputs["product"].startswith("s3://")

    so = {"endpoint_url": s3_endpoint}
    land = xr.open_zarr(cfg.store("statics"), storage_options=so)["land_mask"].values.astype(bool)
    _check_product(xr.open_zarr(cfg.store("product"), storage_options=so), land)

    cat = intake.open_catalog(cfg.store("catalog"), storage_options=so)
    assert "soil_moisture" in list(cat)
    via_intake = cat.soil_moisture.read()
    _check_product(via_intake, land)

    summary = stores.read_json(stores.join(cfg.store("evaluation"), "summary.json"))
    assert _heldout_truth_anomaly_r(summary) > 0.3

    # No output object, attribute, catalog or log line holds the secret key.
    fs, path = stores.filesystem(root)
    objects = fs.find(path)
    assert len(objects) > 50
    leaks = [o for o in objects if SECRET_KEY.encode() in fs.cat_file(o)]
    assert leaks == []
    out, err = capfd.readouterr()
    assert SECRET_KEY not in out + err + caplog.text
