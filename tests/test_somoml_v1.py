"""Import of the published SoMo.ml v1 checkpoint (`somocloud.model.somoml_v1`), on files the tests write in
the published format: a random state dict in the published shapes (torch.save) and two scaler CSVs (header
row of names, first field of each row its label, rows `aveK`/`stdK`).

The artifact is checked against an independent numpy float64 implementation of the paper's EA-LSTM
equations, directly and through `predict` on a tiny world (2 x 2 cells, 365-day windows, 6 product days).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import xarray as xr

from somocloud import stores
from somocloud.cli import main
from somocloud.config import config_from_dict
from somocloud.context import Context
from somocloud.grid import Grid
from somocloud.layers import FORCING_VARIABLES
from somocloud.model.artifact import load_artifact, read_manifest
from somocloud.model.somoml_v1 import SomoImportError, import_somoml_v1
from somocloud.predict import predict, product_days

H = 128
SEQ = 365
SOMO_DYN = ["log_tp", "t2m", "snr", "ssrd", "q", "skt"]
SOMO_STAT = ["ETOPOavg", "ETOPOsd", "tp", "arid", "clay", "sand", "silt", "poro_top", "poro_mid", "domveg"]
# Written independently of the module under test: SoMo.ml name → our canonical name.
OURS = {
    "log_tp": "log_tp", "t2m": "t2m", "snr": "snr", "ssrd": "ssrd", "q": "q", "skt": "skt",
    "ETOPOavg": "elev_mean", "ETOPOsd": "elev_std", "tp": "p_mean", "arid": "aridity", "clay": "clay",
    "sand": "sand", "silt": "silt", "poro_top": "porosity_top", "poro_mid": "porosity_mid",
    "domveg": "veg_type",
}  # fmt: skip
# Scalers of the test (invented values of plausible magnitude): name → (mean, std).
DYN_SCALER = {
    "t2m": (285.0, 11.0), "log_tp": (0.6, 0.8), "snr": (8.0, 5.0), "ssrd": (17.0, 7.5),
    "skt": (286.0, 13.0), "q": (0.0075, 0.0045), "sm": (0.25, 0.11),
}  # fmt: skip
STAT_SCALER = {
    "ETOPOavg": (600.0, 800.0), "ETOPOsd": (60.0, 90.0), "tp": (800.0, 700.0), "arid": (1.8, 1.5),
    "clay": (0.2, 0.1), "sand": (0.45, 0.2), "silt": (0.35, 0.15), "poro_top": (0.45, 0.06),
    "poro_mid": (0.44, 0.06), "domveg": (8.5, 4.0),
}  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _state(seed: int = 0, shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, torch.Tensor]:
    """A random state dict in the published layout, scaled so that the gates are not saturated."""
    g = torch.Generator().manual_seed(seed)
    shapes = shapes or {
        "lstm.weight_ih": (6, 3 * H), "lstm.weight_hh": (H, 3 * H), "lstm.weight_sh": (10, H),
        "lstm.bias": (3 * H,), "lstm.bias_s": (H,), "fc.weight": (1, H), "fc.bias": (1,),
    }  # fmt: skip
    scale = {"lstm.weight_hh": 0.05, "fc.weight": 0.15}
    state = {k: torch.randn(s, generator=g) * scale.get(k, 0.3) for k, s in shapes.items()}
    if state["lstm.bias"].shape == (3 * H,):
        state["lstm.bias"][:H] += 5.0  # the trained forget bias stays near its initial 5
    return state


def _scaler_csv(
    path: Path, values: dict[str, tuple[float, float]], rows: tuple[str, ...] = ("aveK", "stdK")
) -> str:
    names = list(values)
    lines = ["," + ",".join(names)]
    for label in rows:
        k = 0 if label == "aveK" else 1
        lines.append(label + "," + ",".join(repr(values[n][k]) for n in names))
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _write_sources(
    d: Path, seed: int = 0, dyn: dict[str, tuple[float, float]] | None = None
) -> dict[str, str]:
    d.mkdir(parents=True, exist_ok=True)
    ck = d / "model_epoch15.pt"
    torch.save(_state(seed), ck)
    return {
        "checkpoint_url": str(ck),
        "dynamic_scaler_url": _scaler_csv(d / "scaler_ALL_layer0.dat", dyn or DYN_SCALER),
        "static_scaler_url": _scaler_csv(d / "scaler_ALL_statics.dat", STAT_SCALER),
    }


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def reference(state: dict[str, torch.Tensor], dyn_raw: np.ndarray, stat_raw: np.ndarray) -> np.ndarray:
    """The paper's EA-LSTM in float64 numpy. dyn_raw (batch, time, 6) in SOMO_DYN order (log_tp already
    ln(1 + tp)), stat_raw (batch, 10) in SOMO_STAT order → soil moisture (batch,) in m3 m-3."""
    p = {k: v.double().numpy() for k, v in state.items()}
    dm = np.array([DYN_SCALER[n][0] for n in SOMO_DYN])
    ds = np.array([DYN_SCALER[n][1] for n in SOMO_DYN])
    sm_ = np.array([STAT_SCALER[n][0] for n in SOMO_STAT])
    ss = np.array([STAT_SCALER[n][1] for n in SOMO_STAT])
    x = (dyn_raw - dm) / ds
    xs = (stat_raw - sm_) / ss
    i = _sigmoid(xs @ p["lstm.weight_sh"] + p["lstm.bias_s"])
    h = np.zeros((x.shape[0], H))
    c = np.zeros((x.shape[0], H))
    for t in range(x.shape[1]):
        gates = x[:, t] @ p["lstm.weight_ih"] + h @ p["lstm.weight_hh"] + p["lstm.bias"]
        f, o, g = gates[:, :H], gates[:, H : 2 * H], gates[:, 2 * H :]
        c = _sigmoid(f) * c + i * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
    y = h @ p["fc.weight"][0] + p["fc.bias"][0]
    return np.maximum(y * DYN_SCALER["sm"][1] + DYN_SCALER["sm"][0], 0.0)


def _random_raw(rng: np.random.Generator, n: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
    dyn = np.stack([rng.normal(DYN_SCALER[k][0], DYN_SCALER[k][1], (n, steps)) for k in SOMO_DYN], axis=-1)
    stat = np.stack([rng.normal(STAT_SCALER[k][0], STAT_SCALER[k][1], n) for k in SOMO_STAT], axis=-1)
    return dyn, stat


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("somoml")
    sources = _write_sources(root / "published")
    out = str(root / "model")
    content_id = import_somoml_v1(**sources, out_url=out)
    return {"root": root, "sources": sources, "out": out, "content_id": content_id, "state": _state(0)}


def test_artifact_card_and_provenance(imported: dict[str, Any]) -> None:
    model = load_artifact(imported["out"], fast=False)
    card = model.card
    assert model.content_id == imported["content_id"] == read_manifest(imported["out"])["content_id"]
    assert (card.format, card.inference_mode, card.hidden_size, card.seq_length) == (
        "somocloud-model/1", "exact", 128, 365,
    )  # fmt: skip
    assert (card.dropout, card.initial_forget_bias) == (0.5, 5.0)
    assert len(card.layers) == 1 and len(model.members[0]) == 1
    lc = card.layers[0]
    assert lc.depth == 0.05
    assert lc.dynamic_inputs == [OURS[n] for n in SOMO_DYN]
    assert lc.static_inputs == [OURS[n] for n in SOMO_STAT]
    assert (lc.target_mean, lc.target_std) == DYN_SCALER["sm"]
    for somo, (mean, std) in (DYN_SCALER | STAT_SCALER).items():
        if somo != "sm":
            assert card.scaler.mean[OURS[somo]] == mean and card.scaler.std[OURS[somo]] == std
    # the weights are the checkpoint's, unchanged
    net = model.members[0][0]
    for key, value in imported["state"].items():
        assert torch.equal(net.state_dict()[key], value), key
    prov = stores.read_json(stores.join(imported["out"], "provenance.json"))
    for role, url in (
        ("checkpoint", imported["sources"]["checkpoint_url"]),
        ("dynamic_scaler", imported["sources"]["dynamic_scaler_url"]),
        ("static_scaler", imported["sources"]["static_scaler_url"]),
    ):
        assert prov["files"][role]["sha256"] == hashlib.sha256(Path(url).read_bytes()).hexdigest()
        assert prov["files"][role]["url"] == url
    assert prov["names"]["static"]["tp"] == "p_mean" and prov["names"]["dynamic"]["log_tp"] == "log_tp"
    assert stores.read_json(stores.join(imported["out"], "split.json")) == {
        "train_cells": [],
        "holdout_cells": [],
    }


@pytest.mark.parametrize("fast", [True, False])
def test_model_equals_reference_equations(imported: dict[str, Any], fast: bool) -> None:
    model = load_artifact(imported["out"], fast=fast)
    card = model.card
    lc = card.layers[0]
    rng = np.random.default_rng(5)
    dyn, stat = _random_raw(rng, 6, SEQ)
    ref = reference(imported["state"], dyn, stat)
    # our path: names mapped by the card, standardised by the card's scaler
    by_name_d = {OURS[n]: dyn[..., k] for k, n in enumerate(SOMO_DYN)}
    by_name_s = {OURS[n]: stat[..., k] for k, n in enumerate(SOMO_STAT)}
    x_d = card.scaler.apply(np.stack([by_name_d[n] for n in lc.dynamic_inputs], -1), lc.dynamic_inputs)
    x_s = card.scaler.apply(np.stack([by_name_s[n] for n in lc.static_inputs], -1), lc.static_inputs)
    out = model.predict(0, torch.from_numpy(x_d), torch.from_numpy(x_s)).numpy()
    assert out.shape == (1, 6)
    assert np.abs(out[0] - ref).max() < 1e-5
    assert ref.std() > 1e-3  # the windows really differ


# ------------------------------------------------------------------------------------- predict


START, END = dt.date(2003, 3, 1), dt.date(2003, 3, 6)  # 6 product days
GRID = {"resolution": 1.0, "lat_min": 40.0, "lat_max": 42.0, "lon_min": 10.0, "lon_max": 12.0}
SEA = (1, 0)


def test_predict_runs_the_imported_model(
    imported: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = config_from_dict(
        {
            "name": "somoml-import-test",
            "grid": GRID,
            "period": {"start": START.isoformat(), "end": END.isoformat()},
            "stores": {"root": str(tmp_path), "model": imported["out"]},
            "model": {"seq_length": SEQ, "cascade": False},
            "predict": {"tile_size": 2, "time_chunk": 8, "batch_windows": 16},
        }
    )
    grid = Grid.from_config(cfg.grid)
    rng = np.random.default_rng(11)
    days = product_days(cfg.lookback_start, END)
    assert len(days) == SEQ - 1 + 6
    shape = (len(days), *grid.shape)
    season = np.sin(np.arange(len(days)) / 30.0)[:, None, None]
    forcing = {
        "t2m": 285 + 10 * season + 2 * rng.normal(size=shape),
        "tp": rng.gamma(0.6, 4.0, size=shape) * (rng.random(shape) < 0.5),
        "q": 0.0075 + 0.002 * season + 0.0005 * rng.normal(size=shape),
        "snr": 8 + 4 * season + rng.normal(size=shape),
        "ssrd": 17 + 6 * season + rng.normal(size=shape),
        "skt": 286 + 11 * season + 2 * rng.normal(size=shape),
    }
    fds = xr.Dataset(
        {n: (("time", "lat", "lon"), forcing[n].astype("float32")) for n in FORCING_VARIABLES},
        coords={"time": days, **grid.coords()},
    )
    stores.write_zarr(
        fds, cfg.store("forcing"), encoding={n: {"chunks": (len(days), 2, 2)} for n in FORCING_VARIABLES}
    )
    statics = {
        OURS[n]: rng.normal(STAT_SCALER[n][0], STAT_SCALER[n][1] / 2, grid.shape).astype("float32")
        for n in SOMO_STAT
    }
    land = np.ones(grid.shape, dtype=bool)
    land[SEA] = False
    sds = xr.Dataset(
        {n: (("lat", "lon"), v) for n, v in statics.items()} | {"land_mask": (("lat", "lon"), land)},
        coords=grid.coords(),
    )
    stores.write_zarr(sds, cfg.store("statics"))

    with caplog.at_level(logging.WARNING, logger="somocloud.predict"):
        assert predict(cfg, Context(show_progress=False, parts=(1, 1))) == {"product": cfg.store("product")}
    assert any("no model for depths [0.2, 0.4]" in r.getMessage() for r in caplog.records)
    ds = stores.open_zarr(cfg.store("product"), chunks=None).load()
    sm = np.asarray(ds["soil_moisture"].transpose("time", "depth", "lat", "lon").values)
    assert ds.attrs["complete"] and ds.attrs["model_content_id"] == imported["content_id"]
    assert np.isnan(sm[:, 1:]).all()  # layers 2-3: no model
    assert np.isnan(sm[:, 0, SEA[0], SEA[1]]).all()
    assert np.isfinite(sm[:, 0][:, land]).all()
    spread = np.asarray(ds["soil_moisture_spread"].transpose("time", "depth", "lat", "lon").values)
    assert np.all(spread[:, 0][:, land] == 0.0)  # one member

    for (i, j), t in [((0, 0), 0), ((1, 1), 5), ((0, 1), 2)]:  # product day t ends at forcing day t + 364
        window = slice(t, t + SEQ)
        dyn = np.stack(
            [np.log1p(forcing["tp"][window, i, j].astype("float32"))]
            + [forcing[n][window, i, j].astype("float32") for n in SOMO_DYN[1:]],
            axis=-1,
        )[None].astype("float64")
        stat = np.array([[statics[OURS[n]][i, j] for n in SOMO_STAT]], dtype="float64")
        ref = reference(imported["state"], dyn, stat)[0]
        assert abs(sm[t, 0, i, j] - ref) < 1e-5, (i, j, t)


# ------------------------------------------------------------------------ determinism, fallbacks


def test_same_files_give_the_same_content_id(imported: dict[str, Any], tmp_path: Path) -> None:
    again = import_somoml_v1(**imported["sources"], out_url=str(tmp_path / "again"))
    assert again == imported["content_id"]
    assert (
        read_manifest(str(tmp_path / "again"))["files"]["model.json"]
        == (read_manifest(imported["out"])["files"]["model.json"])
    )
    other = _write_sources(tmp_path / "other", seed=1)
    assert import_somoml_v1(**other, out_url=str(tmp_path / "other-model")) != imported["content_id"]


def test_tp_column_is_read_as_log_tp(
    imported: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    renamed = {("tp" if k == "log_tp" else k): v for k, v in DYN_SCALER.items()}
    sources = _write_sources(tmp_path / "src", dyn=renamed)
    with caplog.at_level(logging.WARNING, logger="somocloud.model.somoml_v1"):
        content_id = import_somoml_v1(**sources, out_url=str(tmp_path / "model"))
    assert any("no 'log_tp' column" in r.getMessage() for r in caplog.records)
    assert content_id == imported["content_id"]  # same scaler, same model.json
    prov = stores.read_json(str(tmp_path / "model" / "provenance.json"))
    assert prov["names"]["dynamic"] == {"tp": "log_tp", **{n: n for n in SOMO_DYN[1:]}}
    assert "its `tp` column was read as the statistics of log_tp" in prov["assumptions"][0]


def test_cli_verb(imported: dict[str, Any], tmp_path: Path) -> None:
    src = imported["sources"]
    out = tmp_path / "cli-model"
    argv = [
        "import-somoml", "--no-progress", f"stores.model={out}",
        "--checkpoint", src["checkpoint_url"],
        "--dynamic-scaler", src["dynamic_scaler_url"],
        "--static-scaler", src["static_scaler_url"],
    ]  # fmt: skip
    assert main(argv) == 0
    assert read_manifest(str(out))["content_id"] == imported["content_id"]
    config = stores.read_json(str(out / "config.json"))
    assert config["import_somoml"]["checkpoint"] == src["checkpoint_url"]
    assert main(["import-somoml", "--no-progress", f"stores.model={tmp_path / 'x'}"]) == 1  # nothing given


# ------------------------------------------------------------------------------------ bad inputs


def _bad_checkpoint(d: Path, state: dict[str, torch.Tensor]) -> dict[str, str]:
    sources = _write_sources(d)
    torch.save(state, sources["checkpoint_url"])
    return sources


def test_wrong_shape_names_file_and_key(tmp_path: Path) -> None:
    state = _state(0)
    state["lstm.weight_sh"] = torch.zeros(9, H)  # 9 statics instead of 10
    sources = _bad_checkpoint(tmp_path / "src", state)
    with pytest.raises(
        SomoImportError, match=r"model_epoch15\.pt: key 'lstm\.weight_sh' has shape \(9, 128\)"
    ):
        import_somoml_v1(**sources, out_url=str(tmp_path / "model"))
    assert not (tmp_path / "model").exists()  # nothing written


def test_missing_or_extra_key_and_not_a_checkpoint(tmp_path: Path) -> None:
    state = _state(0)
    del state["fc.bias"]
    sources = _bad_checkpoint(tmp_path / "a", state)
    with pytest.raises(SomoImportError, match=r"model_epoch15\.pt: key 'fc\.bias' is missing"):
        import_somoml_v1(**sources, out_url=str(tmp_path / "model"))
    sources = _bad_checkpoint(tmp_path / "b", _state(0) | {"lstm.extra": torch.zeros(1)})
    with pytest.raises(SomoImportError, match=r"unexpected key 'lstm\.extra'"):
        import_somoml_v1(**sources, out_url=str(tmp_path / "model"))
    Path(sources["checkpoint_url"]).write_text("not a checkpoint")
    with pytest.raises(SomoImportError, match=r"model_epoch15\.pt: not a torch state dict"):
        import_somoml_v1(**sources, out_url=str(tmp_path / "model"))


def test_missing_scaler_column_names_file_and_column(tmp_path: Path) -> None:
    dyn = {k: v for k, v in DYN_SCALER.items() if k != "q"}
    sources = _write_sources(tmp_path / "a", dyn=dyn)
    with pytest.raises(SomoImportError, match=r"scaler_ALL_layer0\.dat: column 'q' is missing"):
        import_somoml_v1(**sources, out_url=str(tmp_path / "model"))
    sources = _write_sources(tmp_path / "b")
    _scaler_csv(Path(sources["static_scaler_url"]), {k: v for k, v in STAT_SCALER.items() if k != "domveg"})
    with pytest.raises(SomoImportError, match=r"scaler_ALL_statics\.dat: column 'domveg' is missing"):
        import_somoml_v1(**sources, out_url=str(tmp_path / "model"))
    sm_less = {k: v for k, v in DYN_SCALER.items() if k != "sm"}
    sources = _write_sources(tmp_path / "c", dyn=sm_less)
    with pytest.raises(SomoImportError, match=r"scaler_ALL_layer0\.dat: column 'sm' is missing"):
        import_somoml_v1(**sources, out_url=str(tmp_path / "model"))
    assert not (tmp_path / "model").exists()


def test_missing_row_or_bad_value_names_file_and_row(tmp_path: Path) -> None:
    sources = _write_sources(tmp_path / "a")
    _scaler_csv(Path(sources["dynamic_scaler_url"]), DYN_SCALER, rows=("stdK",))
    with pytest.raises(SomoImportError, match=r"scaler_ALL_layer0\.dat: row 'aveK' is missing"):
        import_somoml_v1(**sources, out_url=str(tmp_path / "model"))
    sources = _write_sources(tmp_path / "b")
    path = Path(sources["static_scaler_url"])
    path.write_text(path.read_text().replace("stdK,800.0", "stdK,n/a"))
    with pytest.raises(
        SomoImportError, match=r"scaler_ALL_statics\.dat: row 'stdK', column 'ETOPOavg': 'n/a'"
    ):
        import_somoml_v1(**sources, out_url=str(tmp_path / "model"))
    path.write_text(path.read_text().replace("stdK,n/a", "stdK,0.0"))
    with pytest.raises(SomoImportError, match=r"column 'ETOPOavg' must be > 0"):
        import_somoml_v1(**sources, out_url=str(tmp_path / "model"))
    with pytest.raises(SomoImportError, match=r"checkpoint .*nowhere\.pt does not exist"):
        import_somoml_v1(
            str(tmp_path / "nowhere.pt"), sources["dynamic_scaler_url"], str(path), str(tmp_path / "model")
        )


def test_reads_and_writes_any_store(imported: dict[str, Any]) -> None:
    base = "memory://somoml-import-test"
    urls = {}
    for key, path in imported["sources"].items():
        urls[key] = f"{base}/src/{Path(path).name}"
        stores.write_bytes(urls[key], Path(path).read_bytes())
    try:
        assert import_somoml_v1(**urls, out_url=f"{base}/model") == imported["content_id"]
        assert load_artifact(f"{base}/model").content_id == imported["content_id"]
        prov = stores.read_json(f"{base}/model/provenance.json")
        assert prov["files"]["checkpoint"]["url"] == urls["checkpoint_url"]
    finally:
        stores.remove(base)
