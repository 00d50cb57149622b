"""The USCRN station experiment (`somocloud.experiments.uscrn`): the column mapping on real rows, the
physics by hand and against FAO-56's worked examples, and a tiny end-to-end run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from somocloud.experiments import uscrn
from somocloud.experiments.uscrn import (
    ExperimentSettings,
    extraterrestrial_radiation,
    fao56_net_radiation,
    fill_short_gaps,
    specific_humidity_from_rh,
    standard_pressure,
    station_folds,
    station_table,
    uscrn_forcing,
    uscrn_statics,
    uscrn_targets,
)

SUBSET = Path(__file__).parent / "data" / "uscrn" / "crn_2020_subset.parquet"
"""Real USCRN daily rows of stations 03739, 04236, 54796 (full soil moisture) and 96409 (none), 2020."""
NAN = np.nan


@pytest.fixture(scope="module")
def table() -> uscrn.StationTable:
    return station_table(pd.read_parquet(SUBSET))


def test_column_mapping_on_real_rows(table: uscrn.StationTable) -> None:
    assert table.wban.tolist() == ["03739", "04236", "54796", "96409"]
    assert len(table.days) == 366 and str(table.days[0]) == "2020-01-01"
    i = 0  # 03739 at 37.29 N, -75.93 E; day 180 = 2020-06-29, day of year 181
    d = 180
    assert str(table.days[d]) == "2020-06-29" and table.day_of_year[d] == 181
    f = uscrn_forcing(table)
    # The file's row: t_daily_avg 26.4, p 0.0, solarad 26.79, sur_temp_avg 29.1, rh_avg 74.5.
    assert f["t2m"][i, d] == pytest.approx(26.4 + 273.15)
    assert f["tp"][i, d] == 0.0
    assert f["ssrd"][i, d] == pytest.approx(26.79)
    assert f["skt"][i, d] == pytest.approx(29.1 + 273.15)
    # e_s(26.4 °C) = 611.2·exp(17.67·26.4/269.9) = 3441.96 Pa; e = 0.745·e_s; q = 0.622·e/(101325 − 0.378·e).
    assert f["q"][i, d] == pytest.approx(0.622 * 2564.264 / (101325 - 0.378 * 2564.264), rel=1e-5)
    assert f["q"][i, d] == pytest.approx(0.015893, rel=1e-4)
    # Next day: t_daily_avg 25.6, solarad 21.08.
    assert f["t2m"][i, d + 1] == pytest.approx(25.6 + 273.15)
    assert f["ssrd"][i, d + 1] == pytest.approx(21.08)
    # snr: FAO-56 with Ra at 37.29 N on day 181, Tmax 30.7, Tmin 22.0, RH max 94.3, RH min 37.7.
    ra = extraterrestrial_radiation(37.29, 181)
    ea = (0.6108 * np.exp(17.27 * 22.0 / 259.3) * 0.943 + 0.6108 * np.exp(17.27 * 30.7 / 268.0) * 0.377) / 2
    assert f["snr"][i, d] == pytest.approx(fao56_net_radiation(26.79, 30.7, 22.0, ea, ra), rel=1e-9)
    assert 10 < f["snr"][i, d] < 0.77 * 26.79  # a clear summer day loses some longwave
    assert "snr" not in uscrn_forcing(table, snr="none")
    # Targets: layer 1 = 5 cm, layer 2 = 20 cm, layer 3 = 50 cm (0.093, 0.102, 0.147 that day).
    y, probes = uscrn_targets(table, min_days=180)
    np.testing.assert_allclose(y[i, d], [0.093, 0.102, 0.147])
    assert probes.tolist()[:3] == [[5, 20, 50]] * 3
    assert probes[3].tolist() == [0, 0, 0] and np.isnan(y[3]).all()  # 96409 has no soil moisture
    s = uscrn_statics(f, table)
    assert list(s) == ["lat", "lon", "p_mean", "aridity", "t2m_mean", "ssrd_mean", "q_mean", "skt_mean"]
    assert s["lat"][i] == pytest.approx(37.29) and s["lon"][i] == pytest.approx(-75.93)
    assert s["p_mean"][i] == pytest.approx(np.nanmean(f["tp"][i]) * 365.25)
    with_elev = uscrn_statics(f, table, {w: 100.0 for w in table.wban})
    assert with_elev["elev_mean"].tolist() == [100.0] * 4


def test_layer_one_falls_back_to_the_10_cm_probe() -> None:
    rows = []
    for k in range(10):
        rows.append({"wban": "1", "lst_date": f"2020-01-{k + 1:02d}", "latitude": 40.0, "longitude": -100.0,
                     "soil_moisture_5_daily": 0.2 if k < 3 else NAN, "soil_moisture_10_daily": 0.3,
                     "soil_moisture_20_daily": 0.25, "soil_moisture_50_daily": 0.35})  # fmt: skip
    y, probes = uscrn_targets(station_table(pd.DataFrame(rows)), min_days=5)
    assert probes.tolist() == [[10, 20, 50]]
    np.testing.assert_allclose(y[0, :, 0], 0.3)


def test_fao56_worked_examples() -> None:
    # FAO-56 example 8: 20 S on 3 September (day 246): Ra = 32.2 MJ m-2 day-1.
    assert extraterrestrial_radiation(-20.0, 246) == pytest.approx(32.2, abs=0.05)
    # Example 11 (Rio de Janeiro, May): Rs 14.5, Tmax 25.1, Tmin 19.1, ea 2.1 kPa, Rso 18.8 -> Rn 7.6.
    assert fao56_net_radiation(14.5, 25.1, 19.1, 2.1, 18.8 / 0.75) == pytest.approx(7.6, abs=0.05)
    # Polar night: Ra = 0, Rs/Rso taken as 0.33 (smallest longwave loss), no NaN.
    assert extraterrestrial_radiation(80.0, 355) == 0.0
    assert np.isfinite(fao56_net_radiation(0.0, -20.0, -30.0, 0.1, 0.0))


def test_pressure_humidity_gaps_and_folds() -> None:
    assert standard_pressure(None) == 101325.0
    assert standard_pressure(0.0) == pytest.approx(101325.0)
    assert standard_pressure(1000.0) == pytest.approx(89874.6, abs=1.0)
    # Lower pressure, same vapour pressure -> more specific humidity.
    assert specific_humidity_from_rh(20.0, 50.0, 80000.0) > specific_humidity_from_rh(20.0, 50.0, 101325.0)
    x = np.array([1.0, NAN, 3.0, NAN, NAN, NAN, 7.0, NAN])
    np.testing.assert_allclose(fill_short_gaps(x, 2), [1, 2, 3, NAN, NAN, NAN, 7, NAN], equal_nan=True)
    np.testing.assert_allclose(fill_short_gaps(x, 3), [1, 2, 3, 4, 5, 6, 7, NAN], equal_nan=True)
    np.testing.assert_allclose(fill_short_gaps(x, 1, 0.0), [1, 0, 3, NAN, NAN, NAN, 7, NAN], equal_nan=True)
    folds = station_folds(11, 5, seed=3)
    assert sorted(np.bincount(folds).tolist()) == [2, 2, 2, 2, 3]
    np.testing.assert_array_equal(folds, station_folds(11, 5, seed=3))
    assert not np.array_equal(folds, station_folds(11, 5, seed=4))


def six_stations(path: Path) -> str:
    """The three real stations with soil moisture, plus three altered copies (other ids, places, levels)."""
    df = pd.read_parquet(SUBSET)
    df = df[df["wban"] != "96409"]
    copies = df.copy()
    copies["wban"] = "9" + copies["wban"].str[1:]
    copies["latitude"] += 2.0
    copies["longitude"] -= 3.0
    for depth in (5, 10, 20, 50, 100):
        copies[f"soil_moisture_{depth}_daily"] = copies[f"soil_moisture_{depth}_daily"] * 0.7 + 0.05
    copies["p_daily_calc"] = copies["p_daily_calc"] * 1.5
    url = str(path / "six.parquet")
    pd.concat([df, copies]).to_parquet(url)
    return url


TINY = ExperimentSettings(
    n_folds=2, seed=1, seq_length=20, hidden_size=4, epochs=1, batch_size=256, max_windows_per_epoch=512,
    rf_trees=5, min_pairs=10,
)  # fmt: skip


def test_tiny_end_to_end_run_writes_every_method_and_layer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parquet = six_stations(tmp_path)
    out = tmp_path / "results.json"
    code = uscrn.main(
        ["--parquet", parquet, "--out", str(out), "--n-folds", "2", "--seed", "1", "--seq-length", "20",
         "--hidden-size", "4", "--epochs", "1", "--batch-size", "256", "--max-windows-per-epoch", "512",
         "--rf-trees", "5", "--min-pairs", "10"]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "6 of 6 stations" in printed and "random_forest" in printed and "30-50 cm" in printed
    res = json.loads(out.read_text())
    assert res["stations"]["selected"] == 6 and sorted(set(res["stations"]["fold"])) == [0, 1]
    assert res["inputs"]["dynamic"] == ["log_tp", "t2m", "snr", "ssrd", "q", "skt"]
    assert "clay" in res["inputs"]["somoml_statics_unavailable"]
    for method in uscrn.METHODS:
        for layer in ("1", "2", "3"):
            row = res["summary"][method][layer]
            assert row["n_stations"] == 6, (method, layer)
            assert all(isinstance(row[k], float) for k in ("r", "anomaly_r", "ubrmsd")), (method, layer)
            assert len(res["per_station"][method][layer]["r"]) == 6
    assert set(res["ealstm_beats"]["1"]) == {"random_forest", "climatology", "persistence"}
    assert set(res["training"]) == {"0", "1"}
    # Every method is scored on the same days: persistence loses the days after a missing value, the
    # forest (here, with a 20-day lookback) the days before its 90-day precipitation sum is valid.
    n = {m: res["summary"][m]["1"]["n_pairs"] for m in uscrn.METHODS}
    assert n["ealstm"] == n["climatology"] >= max(n["persistence"], n["random_forest"])
    assert min(n.values()) > 0
    # The same settings give the same numbers (seeded folds, EA-LSTM and forest).
    again = uscrn.run_uscrn_experiment(parquet, None, TINY)
    assert again["summary"] == res["summary"]


def test_baselines_never_see_held_out_targets(tmp_path: Path) -> None:
    inp = uscrn.prepare_inputs(pd.read_parquet(six_stations(tmp_path)), TINY)
    folds = station_folds(len(inp.table.wban), 2, seed=1)
    train, test = np.flatnonzero(folds == 0), np.flatnonzero(folds == 1)
    for name in ("random_forest", "climatology"):
        before = uscrn._fit_baseline_fold(name, inp, TINY, train, test, 0)
        inp.targets[test] += 0.1  # change only the held-out stations' observations
        after = uscrn._fit_baseline_fold(name, inp, TINY, train, test, 0)
        inp.targets[test] -= 0.1
        np.testing.assert_array_equal(before, after)


def test_dropped_statics_are_left_out_and_unknown_ones_refused(tmp_path: Path) -> None:
    df = pd.read_parquet(six_stations(tmp_path))
    full = uscrn.prepare_inputs(df, TINY)
    inp = uscrn.prepare_inputs(df, dataclasses.replace(TINY, drop_statics=("lat", "lon")))
    assert full.static_names[:2] == ("lat", "lon")
    assert inp.static_names == full.static_names[2:]
    np.testing.assert_array_equal(inp.stat_raw, full.stat_raw[:, 2:])
    with pytest.raises(ValueError, match=r"drop_statics: unknown statics \['clay'\]"):
        uscrn.prepare_inputs(df, dataclasses.replace(TINY, drop_statics=("clay",)))


def test_member_station_share_is_seeded_and_whole_stations() -> None:
    from somocloud.train import LayerData

    cells = np.repeat(np.arange(10), 5)
    data = LayerData(
        y=np.zeros((10, 5), dtype="float32"), cell_std=np.ones(10, dtype="float32"),
        fit_cells=cells, fit_days=np.tile(np.arange(5), 10), val_cells=cells[:0], val_days=cells[:0],
    )  # fmt: skip
    assert uscrn._member_share(data, TINY, 1) is data  # fraction 1: every window
    half = dataclasses.replace(TINY, member_station_fraction=0.5)
    a, b, c = (uscrn._member_share(data, half, seed) for seed in (1, 1, 2))
    kept = np.unique(a.fit_cells)
    assert len(kept) == 5 and len(a.fit_cells) == 25  # whole stations, every window of each
    np.testing.assert_array_equal(a.fit_days, np.tile(np.arange(5), 5))
    np.testing.assert_array_equal(a.fit_cells, b.fit_cells)
    assert not np.array_equal(np.unique(c.fit_cells), kept)
    with pytest.raises(ValueError, match="member_station_fraction"):
        dataclasses.replace(TINY, member_station_fraction=0.0)


def test_schedule_reaches_the_members_and_bad_items_exit_2() -> None:
    s = dataclasses.replace(TINY, learning_rate_schedule=((3, 1e-3),))
    settings = uscrn._settings(s, 6, 8)
    assert [settings.rate(e) for e in (1, 2, 3, 4)] == [TINY.learning_rate] * 2 + [1e-3] * 2
    with pytest.raises(SystemExit) as exc:
        uscrn.main(["--parquet", "unused.parquet", "--learning-rate-schedule", "6"])
    assert exc.value.code == 2


def test_gldas_statics_take_the_nearest_cell_with_a_value(tmp_path: Path) -> None:
    import xarray as xr

    lat, lon = np.array([40.125, 40.375]), np.array([-100.125, -99.875, -99.625])
    top = np.array([[[20.0, NAN, 30.0], [NAN, NAN, 40.0]]])  # kg m-2 in 0-10 cm
    path = tmp_path / "gldas.nc4"
    xr.Dataset(
        {"SoilMoi0_10cm_inst": (("time", "lat", "lon"), top), "SoilMoi10_40cm_inst": (("time", "lat", "lon"), top * 3)},
        coords={"time": [np.datetime64("2016-01-01T03:00")], "lat": lat, "lon": lon},
    ).to_netcdf(path)  # fmt: skip
    got = uscrn.gldas_statics(str(path), np.array([40.3, 40.125, 45.0]), np.array([-99.9, -99.9, -99.9]))
    # station 0 sits in the empty centre cell: its nearest cells with a value are (40.125, -100.125) at
    # 0.25° and (40.375, -99.625) at 0.22° (longitude distances shrink with cos(lat)); station 2 is 5° away
    np.testing.assert_allclose(got["gldas_sm_0_10"], [0.40, 0.20, NAN])  # 40 kg m-2 / (1000 kg m-3 x 0.1 m)
    np.testing.assert_allclose(got["gldas_sm_10_40"], [0.40, 0.20, NAN])
    xr.open_dataset(path).drop_vars("SoilMoi10_40cm_inst").to_netcdf(tmp_path / "top_only.nc4")
    with pytest.raises(
        ValueError, match=r"top_only\.nc4: GLDAS variables \['SoilMoi10_40cm_inst'\] are missing"
    ):
        uscrn.gldas_statics(str(tmp_path / "top_only.nc4"), np.array([40.3]), np.array([-99.9]))


def test_history_length_by_hand() -> None:
    finite = np.array([[True, True, False, True, True, True], [False, True, True, True, True, True]])
    assert uscrn.history_length(finite).tolist() == [[1, 2, 0, 1, 2, 3], [0, 1, 2, 3, 4, 5]]


def test_last_n_prediction_uses_the_day_s_own_history(tmp_path: Path) -> None:
    """With predict_last_n > 1 a day is predicted from min(seq_length, history) days: the full window's last
    output where the history is long enough, the output at the day's position of one pass from the run's
    start otherwise; days inside the warm-up are NaN."""
    import torch

    from somocloud.model.ealstm import EALSTM

    s = uscrn.ExperimentSettings(seq_length=12, predict_last_n=8, hidden_size=5, dropout=0.0)
    torch.manual_seed(0)
    net = EALSTM(3, 2, 5, 0.0, 1.0)
    rng = np.random.default_rng(0)
    x_dyn = rng.normal(size=(2, 30, 3)).astype("float32")
    x_dyn[1, 10] = np.nan  # station 1: a gap on day 10, so a new run starts on day 11
    x_stat = rng.normal(size=(2, 2)).astype("float32")
    history = uscrn.history_length(np.isfinite(x_dyn).all(axis=2))
    pred = uscrn._predict_ealstm([net.state_dict()], s, x_dyn, x_stat, history, mean=0.5, std=0.1)

    def by_hand(c: int, start: int, day: int) -> float:
        with torch.no_grad():
            x = torch.from_numpy(x_dyn[c : c + 1, start : day + 1])
            return float(net(x, torch.from_numpy(x_stat[c : c + 1]))[0]) * 0.1 + 0.5

    assert np.isnan(pred[0, :4]).all() and np.isfinite(pred[0, 4:]).all()  # warm-up of 4 days
    assert pred[0, 6] == pytest.approx(by_hand(0, 0, 6), abs=1e-6)  # a short window from day 0
    assert pred[0, 20] == pytest.approx(by_hand(0, 9, 20), abs=1e-6)  # the full 12-day window
    assert np.isnan(pred[1, 10:15]).all()  # the gap, then the new run's warm-up
    assert pred[1, 16] == pytest.approx(by_hand(1, 11, 16), abs=1e-6)  # from the new run's start
    assert pred[1, 9] == pytest.approx(by_hand(1, 0, 9), abs=1e-6)


def test_cascade_feeds_simulations_not_observations(tmp_path: Path) -> None:
    """With the cascade, layer 2 and 3 take the upper layers' simulations: changing the held-out stations'
    observations changes none of their predictions, and the deeper layers have more inputs."""
    s = dataclasses.replace(TINY, cascade=True, predict_last_n=10, methods=("ealstm",))
    inp = uscrn.prepare_inputs(pd.read_parquet(six_stations(tmp_path)), s)
    folds = station_folds(len(inp.table.wban), 2, seed=1)
    train, test = np.flatnonzero(folds == 0), np.flatnonzero(folds == 1)
    before, summary = uscrn._fit_ealstm_fold(inp, s, train, test, 0)
    inp.targets[test] += 0.1
    after, _ = uscrn._fit_ealstm_fold(inp, s, train, test, 0)
    np.testing.assert_array_equal(before, after)
    assert np.isfinite(before[:, 40:, :]).any(axis=(0, 1)).all()  # every layer predicted
    # layer 3's first prediction comes after layer 2's (each needs the warm-up of the layer above too)
    first = [int(np.argmax(np.isfinite(before[0, :, k]))) for k in range(3)]
    assert first[0] < first[1] < first[2]
    assert summary["1"]["fit_windows"] > 0 and summary["3"]["fit_windows"] > 0
