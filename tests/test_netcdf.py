"""NetCDF export: one CF-1.11 file per layer and year, checked with compliance-checker offline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from somocloud.context import Context
from somocloud.publish.netcdf import export_netcdf

from .test_publish import _config, _write_product


def test_one_cf_file_per_layer_and_year(tmp_path: Path) -> None:
    cfg = _config(str(tmp_path / "run"), netcdf_prefix="SoMo.ml_v1")
    cfg.period.start = cfg.period.start.replace(year=2019, month=12, day=20)  # two calendar years
    product = _write_product(cfg)
    assert export_netcdf(cfg, Context(show_progress=False)) == {"netcdf": cfg.store("netcdf")}
    files = sorted(p.name for p in Path(cfg.store("netcdf")).glob("*.nc"))
    assert files == [f"SoMo.ml_v1_layer{k}_{y}.nc" for k in (1, 2, 3) for y in (2019, 2020)]

    with xr.open_dataset(Path(cfg.store("netcdf")) / "SoMo.ml_v1_layer2_2020.nc", decode_coords="all") as f:
        ds = f.load()  # closed before the next test opens files (netCDF4 handles left to GC can crash)
    sel = product.isel(depth=1).sel(time=ds["time"].values)
    np.testing.assert_array_equal(ds["soil_moisture"].values, sel["soil_moisture"].values)  # NaN where NaN
    np.testing.assert_array_equal(ds["soil_moisture_spread"].values, sel["soil_moisture_spread"].values)
    assert str(ds["time"].values[0])[:10] == "2020-01-01" and float(ds["depth"]) == pytest.approx(0.2)
    assert ds["depth_bnds"].values.tolist() == pytest.approx([0.1, 0.3])
    assert ds.attrs["Conventions"] == "CF-1.11"
    assert ds["soil_moisture"].attrs["standard_name"] == "volume_fraction_of_condensed_water_in_soil"


def test_publish_adds_one_valid_stac_item_per_exported_year(tmp_path: Path) -> None:
    import pystac

    from somocloud import stores
    from somocloud.publish import publish
    from somocloud.publish.stac import offline_validator

    from .test_publish import _write_side_documents

    cfg = _config(str(tmp_path / "run"))
    cfg.period.start = cfg.period.start.replace(year=2019, month=12, day=20)
    _write_product(cfg)
    _write_side_documents(cfg)
    stores.write_text(stores.join(cfg.store("report"), "index.html"), "<html></html>")
    export_netcdf(cfg, Context(show_progress=False))
    (Path(cfg.store("netcdf")) / "tiny-sm_layer3_2020.nc").unlink()  # an incomplete year gets no Item
    publish(cfg, Context(show_progress=False))
    collection_url = Path(cfg.store("stac")) / "collection.json"
    collection = pystac.Collection.from_file(str(collection_url))
    links = {link.rel: link for link in collection.links if link.rel in ("item", "describedby")}
    assert links["describedby"].title == "Validation report"
    assert (collection_url.parent / links["describedby"].href).resolve() == (
        Path(cfg.store("report")) / "index.html"
    ).resolve()
    items = list(collection.get_items())
    assert [i.id for i in items] == ["tiny-sm-2019"]
    item = items[0]
    item.validate(validator=offline_validator())
    assert item.properties["start_datetime"].startswith("2019-12-20")
    assert item.properties["end_datetime"].startswith("2019-12-31")
    assert sorted(item.assets) == ["layer1", "layer2", "layer3"]
    for k, asset in sorted(item.assets.items()):
        assert Path(asset.get_absolute_href()).name == f"tiny-sm_{k}_2019.nc"
        assert Path(asset.get_absolute_href()).exists()
        assert asset.media_type == "application/netcdf"


def test_files_pass_the_cf_compliance_checker(tmp_path: Path) -> None:
    """compliance-checker's CLI, as a user runs it (in-process, its netCDF handles crash the interpreter
    at exit), offline with its bundled standard-name table."""
    cfg = _config(str(tmp_path / "run"))
    _write_product(cfg)
    export_netcdf(cfg, Context(show_progress=False))
    path = Path(cfg.store("netcdf")) / "tiny-sm_layer1_2020.nc"
    report = tmp_path / "cc.json"
    checker = Path(sys.executable).parent / "compliance-checker"
    proc = subprocess.run(
        [str(checker), "--test=cf:1.11", "--criteria=normal", "--format=json", "-o", str(report), str(path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr[-2000:]  # 1: a warning
    result = json.loads(report.read_text())["cf:1.11"]
    assert result["scored_points"] > 100
    assert result["high_count"] == 0, result["high_priorities"]  # no CF error
    # The one warning left: the checker expects 2-D bounds even for the scalar layer coordinate `depth`,
    # whose 1-D `depth_bnds` (one more dimension than `depth`) is what CF §7.1 asks for.
    assert result["medium_count"] == 1, result["medium_priorities"]
    assert "Boundary variable depth_bnds specified by depth" in json.dumps(result["medium_priorities"])


def test_export_is_a_cli_verb(tmp_path: Path) -> None:
    cfg = _config(str(tmp_path / "run"))
    _write_product(cfg)
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    proc = subprocess.run([sys.executable, "-m", "somocloud", "export-netcdf", "-c", str(cfg_file), "--no-progress"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(list(Path(cfg.store("netcdf")).glob("tiny-sm_layer*_2020.nc"))) == 3
