"""Skill metrics: hand-computed values, NaN pairing, degenerate cases and vectorisation."""

from __future__ import annotations

import numpy as np
import pytest

from somocloud import metrics as m

# Any RuntimeWarning (mean of empty slice, divide by zero, ...) is a failure here.
pytestmark = pytest.mark.filterwarnings("error")

NAN = np.nan
SIM = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
OBS = np.array([1.0, 3.0, 5.0, 7.0, 9.0])  # = 2 * SIM + 1


def test_pearson_r_hand_computed() -> None:
    # dx = [-2,-1,0,1,2], dy = [-1,-2,1,0,2]: sum dx*dy = 8, sxx = syy = 10 → r = 0.8
    assert float(m.pearson_r(np.array([1, 2, 3, 4, 5.0]), np.array([2, 1, 4, 3, 5.0]))) == pytest.approx(0.8)
    assert float(m.pearson_r(SIM, OBS)) == pytest.approx(1.0)
    assert float(m.pearson_r(SIM, -OBS)) == pytest.approx(-1.0)


def test_pairs_use_only_days_where_both_are_finite() -> None:
    sim = np.array([1.0, 2.0, NAN, 4.0, 5.0, 6.0])
    obs = np.array([2.0, 1.0, 100.0, 3.0, 5.0, NAN])
    # pairs (1,2) (2,1) (4,3) (5,5): sum dx*dy = 8, sxx = 10, syy = 8.75
    assert int(m.n_pairs(sim, obs)) == 4
    assert float(m.pearson_r(sim, obs)) == pytest.approx(8 / np.sqrt(87.5))
    # rmse over the same 4 pairs: diffs -1, 1, 1, 0 → sqrt(3/4)
    assert float(m.rmse(sim, obs)) == pytest.approx(np.sqrt(0.75))


def test_error_metrics_hand_computed() -> None:
    # diffs -1..-5: SSE = 55; centred diffs [2,1,0,-1,-2]: 10; mean(obs) = 5; mean(sim) = 2
    assert float(m.rmse(SIM, OBS)) == pytest.approx(np.sqrt(11.0))
    assert float(m.ubrmsd(SIM, OBS)) == pytest.approx(np.sqrt(2.0))
    assert float(m.nrmse(SIM, OBS)) == pytest.approx(np.sqrt(11.0) / 5.0)
    assert float(m.bias_rel(SIM, OBS)) == pytest.approx(-0.6)
    assert float(m.nse(SIM, OBS)) == pytest.approx(1 - 55 / 40)
    # r = 1, alpha = sqrt(10/40) = 0.5, beta = 2/5
    assert float(m.kge(SIM, OBS)) == pytest.approx(1 - np.sqrt(0.5**2 + 0.6**2))


def test_perfect_simulation() -> None:
    obs = np.array([0.2, 0.25, 0.3, 0.22, 0.27])
    s = m.skill(obs, obs)
    assert float(s["rmse"]) == 0 and float(s["ubrmsd"]) == pytest.approx(0, abs=1e-15)
    assert float(s["nse"]) == 1 and float(s["kge"]) == pytest.approx(1)
    assert float(s["bias_rel"]) == 0


def test_ubrmsd_ignores_a_constant_offset() -> None:
    obs = np.array([0.2, 0.25, 0.3, 0.22, 0.27])
    assert float(m.ubrmsd(obs + 0.1, obs)) == pytest.approx(0.0, abs=1e-12)
    assert float(m.rmse(obs + 0.1, obs)) == pytest.approx(0.1)


def test_constant_series_give_nan_not_errors() -> None:
    const = np.full(50, 0.3)
    other = np.linspace(0.1, 0.4, 50)
    assert np.isnan(m.pearson_r(const, other)) and np.isnan(m.pearson_r(other, const))
    assert np.isnan(m.anomaly_r(other, const))
    assert np.isnan(m.nse(other, const)) and np.isnan(m.kge(other, const))
    assert np.isfinite(m.rmse(other, const)) and np.isfinite(m.ubrmsd(other, const))


def test_all_nan_and_empty_give_nan() -> None:
    empty = np.full(20, NAN)
    for name, value in m.skill(empty, np.arange(20.0)).items():
        assert (int(value) == 0) if name == "n" else np.isnan(value), name
    zero_days = m.skill(np.zeros((3, 0)), np.zeros((3, 0)))
    assert zero_days["r"].shape == (3,) and np.isnan(zero_days["r"]).all()


def test_min_n_threshold() -> None:
    sim, obs = SIM, OBS
    assert np.isfinite(m.pearson_r(sim, obs, min_n=5))
    for name, fn in m.METRICS.items():
        if name == "anomaly_r":
            continue
        assert np.isnan(fn(sim, obs, 6)), name
    # one pair is not enough for a correlation even with min_n = 1
    assert np.isnan(m.pearson_r(np.array([1.0]), np.array([2.0]), min_n=1))


def test_zero_observed_mean_gives_nan_relative_metrics() -> None:
    obs = np.array([-1.0, 1.0, -2.0, 2.0])
    sim = np.array([-1.0, 1.5, -2.0, 2.5])
    assert np.isnan(m.nrmse(sim, obs)) and np.isnan(m.bias_rel(sim, obs)) and np.isnan(m.kge(sim, obs))
    assert np.isfinite(m.rmse(sim, obs))


def test_vectorised_over_leading_axes_and_broadcast() -> None:
    rng = np.random.default_rng(3)
    obs = rng.random((2, 3, 80))
    sim = obs + 0.1 * rng.standard_normal((2, 3, 80))
    sim[0, 1, :30] = NAN
    sim[1, 2] = NAN
    for name, fn in m.METRICS.items():
        grid = fn(sim, obs, 10)
        assert grid.shape == (2, 3), name
        for i in range(2):
            for j in range(3):
                np.testing.assert_allclose(grid[i, j], fn(sim[i, j], obs[i, j], 10), err_msg=name)
    assert np.isnan(m.pearson_r(sim, obs)[1, 2])
    # obs shaped (time,) is compared with every row of sim
    np.testing.assert_allclose(m.rmse(sim[0], obs[0, 0]), [m.rmse(s, obs[0, 0]) for s in sim[0]])


def test_anomalies_of_a_ramp() -> None:
    x = np.arange(40.0)
    a = m.anomalies(x)
    assert a[0] == pytest.approx(0 - 8.5)  # window [0, 17] is cut at the start: mean 8.5
    assert a[20] == pytest.approx(0.0)  # full window [3, 37]: mean 20
    assert a[39] == pytest.approx(39 - 30.5)  # window [22, 39]: mean 30.5


def test_anomalies_need_ten_values_in_the_window() -> None:
    x = np.full(60, NAN)
    x[:10] = np.arange(10.0) * 0.01 + 0.2
    a = m.anomalies(x)
    assert np.isfinite(a[:10]).all() and np.isnan(a[10:]).all()
    assert a[5] == pytest.approx(x[5] - x[:10].mean())
    x[9] = NAN  # nine values left: no window reaches ten
    assert np.isnan(m.anomalies(x)).all()
    # a valid day far from the others: its window [23, 57] holds one value only
    y = np.full(60, NAN)
    y[:12] = 1.0 + np.arange(12.0)
    y[40] = 5.0
    ay = m.anomalies(y)
    assert np.isnan(ay[40]) and np.isfinite(ay[:12]).all()


def test_anomaly_r_removes_the_seasonal_cycle() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(3 * 365)
    season = 0.1 * np.sin(2 * np.pi * t / 365)
    sim = 0.3 + season + 0.01 * rng.standard_normal(t.size)
    obs = 0.3 + season + 0.01 * rng.standard_normal(t.size)
    assert float(m.pearson_r(sim, obs)) > 0.95
    assert abs(float(m.anomaly_r(sim, obs))) < 0.15
    shared = 0.02 * rng.standard_normal(t.size)
    assert float(m.anomaly_r(sim + shared, obs + shared)) > 0.7
    assert float(m.anomaly_r(sim, sim)) == pytest.approx(1.0)


def test_skill_returns_every_metric() -> None:
    s = m.skill(SIM, OBS, 2)
    assert set(s) == {"n", *m.METRICS}
    assert int(s["n"]) == 5


def test_nan_reasons_name_the_cause_and_match_the_nan_cells() -> None:
    t = np.arange(60.0)
    wave = 0.25 + 0.05 * np.sin(t / 4.0)
    sim = np.stack([
        wave,                               # fine
        np.full(60, 0.3),                   # constant simulation
        np.where(t < 5, wave, NAN),         # 5 paired days
        np.full(60, NAN),                   # nothing paired
        wave - 0.25,                        # against a zero-mean observation (row 4 of obs)
    ])  # fmt: skip
    obs = np.stack([wave + 0.01, wave, wave, wave, np.tile([-0.1, 0.1], 30)])  # the last: mean exactly 0
    reasons = m.nan_reasons(sim, obs, min_n=10)
    values = {name: fn(sim, obs, 10) for name, fn in m.METRICS.items()}
    for name, why in reasons.items():
        assert why.shape == (5,)
        assert ((why == "") == np.isfinite(values[name])).all(), name  # a reason exactly where NaN
    assert all(reasons[name][0] == "" for name in m.METRICS)
    assert reasons["r"][1] == "constant simulation" and reasons["rmse"][1] == ""
    assert reasons["nse"][1] == "" and reasons["kge"][1] == "constant simulation"
    assert (
        reasons["r"][2] == "fewer than 10 paired days" and reasons["rmse"][2] == "fewer than 10 paired days"
    )
    assert reasons["r"][3] == "no paired days"
    assert reasons["anomaly_r"][2] == "no paired anomaly days"  # 5 values never make a 10-value window
    assert reasons["bias_rel"][4] == "observed mean is 0" and reasons["nrmse"][4] == "observed mean is 0"
    assert reasons["r"][4] == ""


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_equal_to_pytesmo_on_random_series() -> None:
    """Where pytesmo defines the same metric, the values agree (pytesmo sees only the paired days)."""
    import pytesmo.metrics as pm

    rng = np.random.default_rng(11)
    for trial in range(20):
        n = int(rng.integers(40, 400))
        obs = 0.25 + 0.08 * np.sin(np.arange(n) / 9.0) + 0.03 * rng.standard_normal(n)
        sim = 0.8 * obs + 0.06 + 0.04 * rng.standard_normal(n)
        sim[rng.random(n) < 0.15] = NAN  # gaps in either series
        obs[rng.random(n) < 0.15] = NAN
        both = np.isfinite(sim) & np.isfinite(obs)
        s, o = sim[both], obs[both]
        ours = m.skill(sim, obs)
        np.testing.assert_allclose(ours["r"], pm.pearson_r(s, o), rtol=1e-10, err_msg=str(trial))
        np.testing.assert_allclose(ours["rmse"], pm.rmsd(s, o), rtol=1e-10)
        np.testing.assert_allclose(ours["ubrmsd"], pm.ubrmsd(s, o), rtol=1e-10)
        np.testing.assert_allclose(ours["nse"], pm.nash_sutcliffe(o, s), rtol=1e-10)
        np.testing.assert_allclose(ours["bias_rel"] * o.mean(), pm.bias(s, o), rtol=1e-9)
