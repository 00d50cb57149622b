"""Stores, grid, provenance and the cluster factory."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from somocloud import provenance, stores
from somocloud.config import ClusterConfig, load_config
from somocloud.grid import Grid
from somocloud.layers import reference_weights


@pytest.mark.parametrize("scheme", ["plain", "file", "memory"])
def test_zarr_round_trip_and_attrs(tmp_path, scheme) -> None:
    url = {
        "plain": str(tmp_path / "a.zarr"),
        "file": f"file://{tmp_path}/b.zarr",
        "memory": "memory://core/c.zarr",
    }[scheme]
    ds = xr.Dataset({"v": (("x",), np.arange(4, dtype="float32"))}, attrs={"k": 1})
    stores.write_zarr(ds, url)
    stores.update_zarr_attrs(url, {"complete": True})
    back = stores.open_zarr(url)
    np.testing.assert_array_equal(back["v"].values, ds["v"].values)
    assert back.attrs == {"k": 1, "complete": True}
    assert any(u.endswith("zarr.json") for u in stores.list_files(url))


def test_s3_round_trip_uses_environment_only(s3_endpoint) -> None:
    url = "s3://somocloud-test/core/x.zarr"
    assert stores.storage_options(url) == {"endpoint_url": s3_endpoint}
    stores.write_zarr(xr.Dataset({"v": ("x", np.ones(3))}), url)
    assert float(stores.open_zarr(url)["v"].sum()) == 3.0
    stores.write_json("s3://somocloud-test/core/doc.json", {"a": 1})
    assert stores.read_json("s3://somocloud-test/core/doc.json") == {"a": 1}


def test_runtime_options_are_per_protocol() -> None:
    stores.set_runtime_options({"s3": {"anon": True}})
    try:
        assert stores.storage_options("s3://b/k")["anon"] is True
        assert stores.storage_options("/tmp/x") == {}
    finally:
        stores.set_runtime_options({})


def test_markers(tmp_path) -> None:
    m = stores.markers_for(str(tmp_path / "p.zarr"))
    assert not m.done("t1")
    m.mark("t1", {"cells": 3})
    m.mark("t2")
    assert m.done("t1") and m.finished() == {"t1", "t2"}
    assert stores.read_json(m.url("t1"))["cells"] == 3
    m.clear()
    assert m.finished() == set()


def test_grid_centres_and_locate() -> None:
    g = Grid(0.25, 40.0, 41.0, -100.0, -99.0)
    assert g.shape == (4, 4)
    np.testing.assert_allclose(g.lat, [40.125, 40.375, 40.625, 40.875])
    np.testing.assert_allclose(g.lon, [-99.875, -99.625, -99.375, -99.125])
    i, j = g.locate([40.01, 40.99, 40.25, 39.9], [-99.99, 260.5, -99.5, -99.5])
    assert i.tolist() == [0, 3, 1, -1]  # edges belong north; outside → -1
    assert j.tolist() == [0, 2, 2, -1]  # 260.5 east = -99.5
    i, j = g.locate([np.nan, 40.1], [-99.9, np.nan])
    assert i.tolist() == [-1, -1] and j.tolist() == [-1, -1]  # missing coordinates are outside


def test_grid_tiles_cover_once() -> None:
    g = Grid(0.1, 0.0, 1.3, 0.0, 0.7)
    cover = np.zeros(g.shape, int)
    for t in g.tiles(5):
        cover[t.i0 : t.i1, t.j0 : t.j1] += 1
    assert (cover == 1).all()
    assert len({t.id for t in g.tiles(5)}) == len(g.tiles(5))


def test_reference_weights_by_depth_overlap() -> None:
    w = reference_weights()
    np.testing.assert_allclose(w[0], [0.7, 0.3, 0.0])  # 0-10 cm: 7 cm of 0-7, 3 cm of 7-28
    np.testing.assert_allclose(w[1], [0.0, 0.9, 0.1])  # 10-30 cm: 18 cm of 7-28, 2 cm of 28-100
    np.testing.assert_allclose(w[2], [0.0, 0.0, 1.0])


def test_provenance_chains_content_ids(tmp_path) -> None:
    cfg = load_config(None, [f"stores.root={tmp_path}"])
    a = str(tmp_path / "a.zarr")
    stores.write_zarr(xr.Dataset({"v": ("x", np.ones(2))}), a)
    raw = tmp_path / "files"
    raw.mkdir()
    (raw / "f.txt").write_text("x")
    attrs = provenance.provenance_attrs(cfg, "forcing", {"a": a, "raw": str(raw)})
    assert attrs["somocloud_step"] == "forcing"
    assert '"forcing"' not in attrs["somocloud_inputs"]
    same = provenance.provenance_attrs(cfg, "forcing", {"a": a, "raw": str(raw)})
    assert same[provenance.CONTENT_ID] == attrs[provenance.CONTENT_ID]
    (raw / "f.txt").write_text("y")  # an input changed → a different id
    changed = provenance.provenance_attrs(cfg, "forcing", {"a": a, "raw": str(raw)})
    assert changed[provenance.CONTENT_ID] != attrs[provenance.CONTENT_ID]


def test_missing_input_is_named(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        provenance.fingerprint(str(tmp_path / "nothing-here"))


def test_cluster_factory_local_and_unknown_extras() -> None:
    from somocloud.cluster import make_client

    client = make_client(ClusterConfig(kind="local", n_workers=1))
    try:
        assert client.submit(lambda x: x + 1, 1).result() == 2
        assert len(client.scheduler_info()["workers"]) == 1
        env = client.run(
            lambda: (os.environ.get("MALLOC_TRIM_THRESHOLD_"), os.environ.get("OMP_NUM_THREADS"))
        )
        assert list(env.values()) == [(None, "1")]  # torch-friendly malloc, threads still capped
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()


def test_scheduler_address_path_uses_a_running_scheduler() -> None:
    from distributed import LocalCluster

    from somocloud.cli import _load, build_parser
    from somocloud.cluster import make_client

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as running:
        args = build_parser().parse_args(["predict", "--scheduler-address", running.scheduler_address])
        cfg = _load(args)
        assert cfg.cluster.kind == "address" and cfg.cluster.address == running.scheduler_address
        client = make_client(cfg.cluster)
        try:
            assert client.scheduler.address == running.scheduler_address
            assert client.submit(lambda x: x * 3, 2).result() == 6
        finally:
            client.close()


def test_coiled_and_kubernetes_are_optional_extras_with_options(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    from somocloud.cluster import make_client

    for kind, extra in (("coiled", "coiled"), ("kubernetes", "k8s")):
        monkeypatch.setitem(sys.modules, "coiled" if kind == "coiled" else "dask_kubernetes", None)
        with pytest.raises(RuntimeError, match=rf"pip install 'somocloud\[{extra}\]'"):
            make_client(ClusterConfig(kind=kind))
    # A stand-in `coiled` module records what the factory asks Coiled for.
    made: dict[str, object] = {}

    class Cluster:
        def __init__(self, **kwargs: object) -> None:
            made.update(kwargs)

        def get_client(self) -> str:
            return "client"

    monkeypatch.setitem(sys.modules, "coiled", types.SimpleNamespace(Cluster=Cluster))
    cfg = ClusterConfig(kind="coiled", n_workers=6, options={"worker_gpu": 1, "region": "eu-central-1"})
    assert make_client(cfg) == "client"
    assert made == {"n_workers": 6, "worker_gpu": 1, "region": "eu-central-1"}
    with pytest.raises(ValueError, match=r"cluster\.options\.aws_secret_access_key: credentials never"):
        ClusterConfig(kind="coiled", options={"aws_secret_access_key": "x"})


def test_deploy_examples_are_valid_configs() -> None:
    import yaml

    from somocloud.config import config_from_dict

    deploy = Path(__file__).resolve().parents[1] / "deploy"
    examples = sorted(deploy.glob("*.yaml"))
    assert examples
    for path in examples:
        cfg = config_from_dict({"cluster": yaml.safe_load(path.read_text())["cluster"]}, str(path))
        assert cfg.cluster.kind in ("coiled", "address", "kubernetes")


def test_content_id_ignores_runtime_settings_and_locations(tmp_path) -> None:
    a = str(tmp_path / "a.zarr")
    stores.write_zarr(xr.Dataset({"v": ("x", np.ones(2))}), a)
    base = load_config(None, [f"stores.root={tmp_path}"])
    moved = load_config(
        None, ["stores.root=s3://elsewhere/x", "cluster.n_workers=8", "predict.batch_windows=7"]
    )
    method = load_config(None, [f"stores.root={tmp_path}", "model.hidden_size=64"])
    ids = [
        provenance.provenance_attrs(c, "predict", {"a": a})[provenance.CONTENT_ID]
        for c in (base, moved, method)
    ]
    assert ids[0] == ids[1] != ids[2]
