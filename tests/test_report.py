"""Report pieces that the end-to-end run does not reach: the real-station section."""

from __future__ import annotations

import numpy as np

from somocloud import report


def _results() -> dict:
    methods = ("ealstm", "random_forest", "climatology", "persistence")
    rng = np.random.default_rng(0)
    per = {
        m: {str(k): {"anomaly_r": [*rng.uniform(0, 1, 9).tolist(), None]} for k in (1, 2, 3)} for m in methods
    }
    summary = {m: {str(k): {"r": 0.1 * i + 0.01 * k, "anomaly_r": 0.5, "ubrmsd": 0.03, "n_stations": 10}
                   for k in (1, 2, 3)} for i, m in enumerate(methods)}  # fmt: skip
    return {"experiment": "uscrn-daily-station-holdout", "stations": {"selected": 10},
            "settings": {"n_folds": 5}, "per_station": per, "summary": summary}  # fmt: skip


def test_station_experiment_section() -> None:
    import matplotlib

    matplotlib.use("Agg")
    results = _results()
    table = report._stations_table(results)
    assert table.count("<tr>") == 1 + 3 * 4  # header, then layer x method
    assert "<td>1</td><td>random_forest</td><td>0.110</td><td>0.500</td><td>0.030</td><td>10</td>" in table
    fig = report._stations_boxplots(results)
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == [
        "layer 1: anomaly r",
        "layer 2: anomaly r",
        "layer 3: anomaly r",
    ]
    assert [t.get_text() for t in axes[0].get_xticklabels()] == [
        "ealstm", "random forest", "climatology", "persistence"
    ]  # fmt: skip
    assert "10 stations, station-grouped 5-fold CV" in report._stations_caption(results)
