"""The whole data flow on a tiny synthetic world: verb by verb through the CLI, and on a moto S3 server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from somocloud import pipeline, steps, stores
from somocloud.config import RunConfig
from somocloud.context import Context

from .conftest import BUCKET, SECRET_KEY, SESSION_TOKEN, tiny_config

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
        if r["reference"] == "truth"
        and r["split"] == "holdout"
        and r["depth"] == 0.05
        and r["dataset"] == "product"
    ]
    assert rows, summary
    return float(rows[0]["anomaly_r"])


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> RunConfig:
    """Every verb of the data flow run alone through the CLI, in order, on the tiny world."""
    tmp_path = tmp_path_factory.mktemp("cli")
    cfg = tiny_config(str(tmp_path / "run"))
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    for verb in ["synthetic", *steps.RUN_ORDER]:
        proc = subprocess.run(
            [sys.executable, "-m", "somocloud", verb, "-c", str(cfg_file), "--no-progress"],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, f"{verb} failed:\n{proc.stderr[-3000:]}"
    return cfg


def test_every_verb_runs_alone_through_the_cli(cli_run: RunConfig) -> None:
    cfg = cli_run
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


def test_lookback_curve_falls_when_fewer_days_than_the_memory_are_kept(cli_run: RunConfig) -> None:
    """SoMo.ml-EU's permutation experiment on the tiny world: shuffling all but the last n days of each
    window costs skill when n is below the truth's memory, and nothing once n covers the window."""
    curve = stores.read_json(stores.join(cli_run.store("evaluation"), "lookback.json"))
    kept = curve["kept_days"]
    assert kept[0] == 1 and kept[-1] == cli_run.model.seq_length and kept == sorted(kept)
    assert curve["reference"] == "truth" and len(curve["memory_days"]) == 3
    top = curve["layers"]["0-10cm"]
    memory = curve["memory_days"][0]
    below = [v for n, v in zip(kept, top, strict=True) if n < memory]
    assert below and top[-1] - below[0] > 0.1, (kept, top)  # one day kept: clearly worse than all days
    assert top[-1] > 0.3  # the unshuffled model has skill to lose
    assert all(np.isfinite(v) for values in curve["layers"].values() for v in values)


def _chromium() -> str:
    found = (
        os.environ.get("SOMOCLOUD_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )
    if not found:
        pytest.fail("headless Chromium is needed: `apt-get install chromium` (make test installs it)")
    return found


def test_report_renders_in_headless_chromium(cli_run: RunConfig, tmp_path: Path) -> None:
    """The report page opens offline, every figure loads, and the rendered page is not blank."""
    from PIL import Image

    index = Path(cli_run.store("report")) / "index.html"
    page = index.read_text()
    figures = sorted(p.name for p in (index.parent / "figures").glob("*.png"))
    assert figures == ["example_series.png", "latitude_profiles.png", "lookback.png", "median_maps.png",
                       "skill_boxplots.png", "skill_by_climate.png"]  # fmt: skip
    for name in figures:
        assert f'src="figures/{name}"' in page
    assert "http://" not in page and "https://" not in page  # nothing fetched from the network
    assert "s3://" not in page and cli_run.stores.root not in page  # no store URL is published
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    url = index.resolve().as_uri()
    dom = subprocess.run([_chromium(), *flags, "--virtual-time-budget=10000", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert 'data-figures="6" data-figures-ok="6"' in dom.stdout, dom.stdout[:500] + dom.stderr[-2000:]
    shot = tmp_path / "report.png"
    subprocess.run([_chromium(), *flags, "--hide-scrollbars", "--window-size=1300,2400",
                    f"--screenshot={shot}", url], capture_output=True, timeout=120, check=True)  # fmt: skip
    pixels = np.asarray(Image.open(shot).convert("L"), dtype="float64")
    assert pixels.shape == (2400, 1300)
    assert pixels.std() > 20 and (pixels < 128).mean() > 0.02  # text and figures, not a blank page

    # a figure that fails to load is counted as such: the check can fail
    broken = index.parent / "broken.html"
    broken.write_text(page.replace('src="figures/median_maps.png"', 'src="figures/missing.png"'))
    dom = subprocess.run([_chromium(), *flags, "--virtual-time-budget=10000", "--dump-dom", broken.as_uri()],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert 'data-figures-ok="5"' in dom.stdout


def test_tiny_world_on_s3_opened_by_analysts(
    s3_endpoint: str, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    import intake

    caplog.set_level("DEBUG")
    root = f"s3://{BUCKET}/e2e"
    # Published for anonymous read: the STAC asset says so, and publish grants it by object ACL.
    cfg = tiny_config(root, publish={"public_read": True, "object_acl": "public-read"})
    with Context(show_progress=True) as ctx:
        outputs = pipeline.demo(cfg, ctx)
        steps.entry("export-netcdf")(cfg, ctx)
        steps.entry("publish")(cfg, ctx)  # again: now with one STAC Item per year of NetCDF files
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

    # Analysts, in a process without somocloud, anonymously and with keys: the three documented ways.
    product = xr.open_zarr(cfg.store("product"), storage_options=so)
    day0 = float(np.nansum(product["soil_moisture"].isel(time=0).values))
    private = stores.join(cfg.store("targets"), "zarr.json")
    for access in ("anon", "keys"):
        got = _run_analyst(
            [cfg.store("catalog"), cfg.store("product"), stores.join(cfg.store("stac"), "collection.json"),
             private, access], s3_endpoint, with_keys=access == "keys",
        )  # fmt: skip
        for way in ("intake_whole", "open_zarr", "stac"):
            assert got[way] == pytest.approx(day0, rel=1e-6), (access, way)
        assert got["intake_layer1"] == pytest.approx(got["open_zarr_layer1"], rel=1e-6)
        assert got["sizes"] == dict(product.sizes)
        assert "soil_moisture_30_50cm" in got["catalog_entries"]
        assert got["items"] == ["./items/somocloud-tiny-2020.json"]
        assert got["private_readable"] is (access == "keys"), "only published objects are public"

    # No output object, attribute, catalog or log line holds the secret key.
    fs, path = stores.filesystem(root)
    objects = fs.find(path)
    assert len(objects) > 50
    planted = [SECRET_KEY, SESSION_TOKEN, s3_endpoint]  # the endpoint is no secret, but is never published
    leaks = [(o, p) for o in objects for p in planted if p.encode() in fs.cat_file(o)]
    assert leaks == []
    assert any(o.endswith(".nc") for o in objects) and any("/items/" in o for o in objects)
    out, err = capfd.readouterr()
    assert not [p for p in planted[:2] if p in out + err + caplog.text]


def _run_analyst(args: list[str], endpoint: str, with_keys: bool) -> dict:
    """`tests/analyst.py` in `python -S` with only site-packages on its path (somocloud not importable),
    the endpoint in the environment and keys only when asked."""
    paths = sysconfig.get_paths()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "PYTHONPATH"}
    env |= {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
        "PYTHONPATH": os.pathsep.join(dict.fromkeys([paths["purelib"], paths["platlib"]])),
    }
    if with_keys:
        env |= {"AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
                "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"]}  # fmt: skip
    script = Path(__file__).with_name("analyst.py")
    proc = subprocess.run([sys.executable, "-S", str(script), *args], capture_output=True, text=True,
                          env=env, cwd=script.parent, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))
