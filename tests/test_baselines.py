"""Baselines (`somocloud.baselines`): antecedent features, climatology, persistence and the random forest
on small arrays whose answers are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from somocloud import metrics
from somocloud.baselines import (
    BASELINES,
    Baseline,
    BaselineData,
    antecedent_features,
    make_baseline,
    window_means,
    window_sums,
)

NAN = np.nan


def data_of(
    target: np.ndarray,
    doy: np.ndarray | None = None,
    ids: list[str] | None = None,
    dynamic: np.ndarray | None = None,
    names: tuple[str, ...] = ("log_tp", "t2m"),
    static: np.ndarray | None = None,
) -> BaselineData:
    target = np.asarray(target, dtype="float64")
    n, t = target.shape
    return BaselineData(
        dynamic=np.zeros((n, t, len(names))) if dynamic is None else dynamic,
        dynamic_names=names,
        static=np.zeros((n, 1)) if static is None else static,
        static_names=("s",),
        target=target,
        day_of_year=np.arange(1, t + 1) if doy is None else np.asarray(doy),
        cell_ids=np.array(ids or [f"c{i}" for i in range(n)]),
    )


def test_window_means_and_sums_by_hand() -> None:
    x = np.array([1.0, 2.0, NAN, 4.0, 5.0])
    got = window_means(x, (1, 2, 3), min_valid_fraction=0.5)
    # w=1 needs 1 valid day; w=2 needs 1; w=3 needs 2 (days before the series count as missing).
    expect = np.array(
        [
            [1.0, 1.0, NAN],
            [2.0, 1.5, 1.5],
            [NAN, 2.0, 1.5],
            [4.0, 4.0, 3.0],
            [5.0, 4.5, 4.5],
        ]
    )
    np.testing.assert_allclose(got, expect, equal_nan=True)
    np.testing.assert_allclose(window_sums(x, (3,), 0.5)[:, 0], [NAN, 4.5, 4.5, 9.0, 13.5], equal_nan=True)
    strict = window_means(x, (2,), min_valid_fraction=1.0)[:, 0]
    np.testing.assert_allclose(strict, [NAN, 1.5, NAN, NAN, 4.5], equal_nan=True)
    # Leading axes are carried through: two series at once.
    both = window_means(np.stack([x, 2 * x]), (2,), 0.5)
    np.testing.assert_allclose(both[1, :, 0], 2 * expect[:, 1], equal_nan=True)


def test_antecedent_features_order_names_and_values() -> None:
    tp = np.array([[0.0, 10.0, 0.0, 5.0]])
    t2m = np.array([[280.0, 282.0, 284.0, 286.0]])
    dyn = np.stack([np.log1p(tp), t2m], axis=-1)
    data = data_of(np.zeros((1, 4)), dynamic=dyn, static=np.array([[7.0]]))
    feats, names = antecedent_features(data, precip_windows=(3,), mean_inputs=("t2m",), mean_windows=(2,))
    assert names == ["log_tp", "t2m", "s", "tp_sum_3d", "t2m_mean_2d"]
    assert feats.shape == (1, 4, 5)
    np.testing.assert_allclose(feats[0, :, 2], 7.0)  # the static on every day
    # 3-day precipitation sum (mm, back from log_tp): day 3 = 10 + 0 + 5; day 2 = 0 + 10 + 0;
    # day 0 has 1 of 3 days (< 80 %) -> NaN; day 1 has 2 of 3 (< 80 %) -> NaN.
    np.testing.assert_allclose(feats[0, :, 3], [NAN, NAN, 10.0, 15.0], equal_nan=True, rtol=1e-6)
    np.testing.assert_allclose(feats[0, :, 4], [NAN, 281.0, 283.0, 285.0], equal_nan=True)  # day 0: 1 of 2


def test_climatology_exact_values_and_fallbacks() -> None:
    # Days 0..3 with day of year 1, 2, 1, 2 (two short "years"); cells A, B seen, C never.
    target = np.array(
        [
            [0.10, 0.20, 0.30, 0.40],  # A
            [0.50, 0.60, NAN, NAN],  # B
            [0.90, 0.90, 0.90, 0.90],  # C (not in training)
        ]
    )
    doy = np.array([1, 2, 1, 3])
    data = data_of(target, doy=doy, ids=["A", "B", "C"])
    # Fit on A (all days) and B day 0 only.
    clim = make_baseline("climatology").fit(data, np.array([0, 0, 0, 0, 1]), np.array([0, 1, 2, 3, 1 - 1]))
    cells = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    days = np.array([0, 1, 3, 2, 1, 0, 1, 3])
    got = clim.predict(data, cells, days)
    expect = [
        0.20,  # A, doy 1: mean of 0.1 and 0.3
        0.20,  # A, doy 2: 0.2
        0.40,  # A, doy 3: 0.4
        0.50,  # B, doy 1: its own 0.5
        0.50,  # B, doy 2: B has no doy-2 training value -> B's mean over its training days
        (0.1 + 0.3 + 0.5) / 3,  # C unseen, doy 1: mean over all training cells on doy 1
        0.20,  # C unseen, doy 2: only A has doy 2
        0.40,  # C unseen, doy 3: only A has doy 3
    ]
    np.testing.assert_allclose(got, expect)
    # A day of year no training cell has -> the overall training mean.
    other = data_of(np.zeros((1, 1)), doy=np.array([200]), ids=["C"])
    np.testing.assert_allclose(clim.predict(other, np.array([0]), np.array([0])), [(1.0 + 0.5) / 5])


def test_persistence_is_yesterday_and_nan_after_a_gap() -> None:
    target = np.array([[0.1, 0.2, NAN, 0.4, 0.5]])
    data = data_of(target)
    pers = make_baseline("persistence").fit(data, np.zeros(0, "int64"), np.zeros(0, "int64"))
    got = pers.predict(data, np.zeros(5, "int64"), np.arange(5))
    # Day 0 has no yesterday; day 3's yesterday is missing: NaN, nothing carried forward.
    np.testing.assert_allclose(got, [NAN, 0.1, 0.2, NAN, 0.4], equal_nan=True)


def toy_world(seed: int = 0, n_cells: int = 24, n_days: int = 240) -> BaselineData:
    """Soil moisture that is a known function of the last 7 days' rain and a static (learnable)."""
    rng = np.random.default_rng(seed)
    tp = rng.gamma(0.4, 8.0, size=(n_cells, n_days)) * (rng.random((n_cells, n_days)) < 0.4)
    t2m = 285 + 10 * np.sin(np.arange(n_days) / 40.0)[None, :] + rng.normal(0, 1, (n_cells, n_days))
    static = rng.uniform(0, 1, (n_cells, 1))
    rain7 = window_sums(tp, (7,), 1.0)[..., 0]
    target = 0.05 + 0.2 * static + 0.004 * np.nan_to_num(rain7) + rng.normal(0, 0.005, (n_cells, n_days))
    return BaselineData(
        dynamic=np.stack([np.log1p(tp), np.broadcast_to(t2m, tp.shape)], axis=-1),
        dynamic_names=("log_tp", "t2m"),
        static=static,
        static_names=("s",),
        target=target,
        day_of_year=np.arange(1, n_days + 1),
        cell_ids=np.array([f"c{i}" for i in range(n_cells)]),
    )


def test_random_forest_is_deterministic_and_beats_climatology_on_a_learnable_toy() -> None:
    data = toy_world()
    n_cells, n_days = data.target.shape
    train_cells = np.arange(18)
    cells, days = np.repeat(train_cells, n_days), np.tile(np.arange(n_days), len(train_cells))
    test = np.arange(18, n_cells)
    tc, td = np.repeat(test, n_days), np.tile(np.arange(n_days), len(test))
    opts = {
        "n_estimators": 15,
        "seed": 3,
        "precip_windows": (3, 7),
        "mean_windows": (7,),
        "mean_inputs": ("t2m",),
    }
    rf1 = make_baseline("random_forest", **opts).fit(data, cells, days).predict(data, tc, td)
    rf2 = make_baseline("random_forest", n_jobs=2, **opts).fit(data, cells, days).predict(data, tc, td)
    np.testing.assert_array_equal(rf1, rf2)  # same seed, bit-identical, also with n_jobs=2
    rf3 = make_baseline("random_forest", **(opts | {"seed": 4})).fit(data, cells, days).predict(data, tc, td)
    assert not np.array_equal(rf1, rf3)
    # The first 6 days lack a complete 7-day window (min_valid_fraction 0.8 needs 6 of 7 days).
    assert np.isnan(rf1.reshape(len(test), n_days)[:, :5]).all()
    clim = make_baseline("climatology").fit(data, cells, days).predict(data, tc, td)
    obs = data.target[tc, td]
    rmse_rf = float(metrics.rmse(rf1, obs))
    rmse_clim = float(metrics.rmse(clim, obs))
    r_rf = metrics.pearson_r(rf1.reshape(len(test), n_days), data.target[test])
    r_clim = metrics.pearson_r(clim.reshape(len(test), n_days), data.target[test])
    assert rmse_rf < 0.5 * rmse_clim
    assert np.median(r_rf) > 0.9 and np.median(r_rf) > np.median(r_clim) + 0.2


def test_registry_protocol_and_checks() -> None:
    assert set(BASELINES) >= {"random_forest", "climatology", "persistence"}
    for name in BASELINES:
        assert isinstance(make_baseline(name), Baseline)
    with pytest.raises(KeyError, match="unknown baseline 'nope'"):
        make_baseline("nope")
    with pytest.raises(ValueError, match="dynamic has shape"):
        BaselineData(
            np.zeros((2, 3, 1)),
            ("a", "b"),
            np.zeros((2, 0)),
            (),
            np.zeros((2, 3)),
            np.arange(1, 4),
            np.arange(2),
        )
    with pytest.raises(ValueError, match=r"1\.\.366"):
        data_of(np.zeros((1, 2)), doy=np.array([0, 1]))
    with pytest.raises(RuntimeError, match="before fit"):
        make_baseline("random_forest").predict(
            data_of(np.zeros((1, 2))), np.zeros(1, "int64"), np.zeros(1, "int64")
        )
    with pytest.raises(KeyError, match="dynamic input 'tp'"):
        data_of(np.zeros((1, 2)), names=("t2m", "q")).dynamic_input("tp")
