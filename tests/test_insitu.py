"""In-situ ingestion: the vectorised tokenizer, the ISMN header+values reader, quality control, daily
means and the `ingest` step. Helpers here are shared by the other `test_insitu_*` files."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from somocloud import stores
from somocloud.config import IngestConfig, RunConfig, config_from_dict
from somocloud.context import Context
from somocloud.insitu import (
    CeopSeparateReader,
    HeaderValuesReader,
    InSituFileError,
    InSituReader,
    SensorSeries,
    daily_means,
    flag_mask,
    ingest,
    process_file,
    qc_daily,
    read_daily_series,
    reader_for,
)
from somocloud.insitu.qc import unknown_flags
from somocloud.insitu.tokens import Tokens

DATA = Path(__file__).parent / "data"
ISMN_DATA = DATA / "ismn"

# Excerpts (bytes as shipped, line endings included) of real ISMN files from the `ismn` package's test
# fixtures (tests/data/ismn, MIT licence), used for parser tests:
# Data_seperate_files_header_20170810_20180809/COSMOS/ARM-1/COSMOS_COSMOS_ARM-1_sm_0.000000_0.190000_
# Cosmic-ray-Probe_20170810_20180809.stm: LF after the header, then a lone CR, then CRLF records.
COSMOS_EXCERPT = (
    b"COSMOS     COSMOS          ARM-1             36.60540   -97.48780  322.00    0.00    0.19 Cosmic-ray-Probe\n"
    b"\r2017/08/10 00:00   0.1410 G M\r\n"
    b"2017/08/10 01:00   0.1390 G M\r\n"
    b"2017/12/08 19:00   0.0960 D03 M\r\n"
    b"2017/12/08 20:00   0.0970 D03,D05 M\r\n"
    b"2017/12/08 22:00   0.0990 G M\r\n"
)
# format_header_values/SMOSMANIA/SMOSMANIA_SMOSMANIA_Narbonne_sm_0.050000_0.050000_ThetaProbe-ML2X_
# 20070101_20070131.stm: CR-only line endings, trailing blanks, one record without a provider flag.
SMOSMANIA_EXCERPT = (
    b"SMOSMANIA  SMOSMANIA       Narbonne          43.15000     2.95670  112.00    0.05    0.05 ThetaProbe-ML2X \r"
    b"2007/01/01 21:00   0.2121 U M \r"
    b"2007/01/01 22:00   0.2121 U   \r"
    b"2007/01/01 23:00   0.2116 U M \r"
)
COSMOS_NAME = "COSMOS_COSMOS_ARM-1_sm_0.000000_0.190000_Cosmic-ray-Probe_20170810_20180809.stm"
SMOSMANIA_NAME = "SMOSMANIA_SMOSMANIA_Narbonne_sm_0.050000_0.050000_ThetaProbe-ML2X_20070101_20070131.stm"
NAME = "XX_NET_ST_sm_0.050000_0.050000_Probe_20200101_20201231.stm"
"""A valid ISMN file name for reader tests."""


def stm_name(
    network: str, station: str, depth_from: float, depth_to: float, sensor: str, var: str = "sm"
) -> str:
    """ISMN file name (spaces removed from the sensor, as ISMN does)."""
    sensor_part = sensor.replace(" ", "")
    return f"XX_{network}_{station}_{var}_{depth_from:.6f}_{depth_to:.6f}_{sensor_part}_20200101_20201231.stm"


def header(
    network: str, station: str, lat: float, lon: float, depth_from: float, depth_to: float, sensor: str
) -> str:
    return (
        f"XX         {network:<15} {station:<17} {lat:9.5f} {lon:11.5f}  100.00 {depth_from:7.2f} "
        f"{depth_to:7.2f} {sensor}"
    )


def records(
    start: str, days: int, per_day: int, value: float | list[float] = 0.2, flag: str = "G"
) -> list[str]:
    """`per_day` evenly spaced records on each of `days` days; a list of values cycles through them."""
    step = 24 // per_day
    vals = value if isinstance(value, list) else [value]
    out = []
    for d in range(days):
        day = pd.Timestamp(start) + pd.Timedelta(days=d)
        for h in range(per_day):
            v = vals[(d * per_day + h) % len(vals)]
            out.append(f"{(day + pd.Timedelta(hours=h * step)):%Y/%m/%d %H:%M}   {v:.4f} {flag} M")
    return out


def write_stm(
    root: str,
    network: str = "NET",
    station: str = "ST1",
    depth: tuple[float, float] = (0.05, 0.05),
    sensor: str = "Hydraprobe II Sdi-12",
    lines: list[str] | None = None,
    eol: str = "\n",
    lat: float = 40.5,
    lon: float = -99.5,
    var: str = "sm",
) -> str:
    """Write one ISMN header+values file under `root` (any store URL); returns its URL."""
    body = [header(network, station, lat, lon, depth[0], depth[1], sensor), *(lines or [])]
    url = stores.join(root, network, station, stm_name(network, station, depth[0], depth[1], sensor, var))
    stores.write_bytes(url, (eol.join(body) + eol).encode())
    return url


def read_hv(data: bytes, name: str = NAME) -> SensorSeries:
    """The single series of a header+values file; asserts nothing was rejected."""
    content = HeaderValuesReader().read(name, data)
    assert len(content.series) == 1
    return content.series[0]


def run_config(tmp: str, **ingest: object) -> RunConfig:
    return config_from_dict(
        {
            "grid": {"resolution": 1.0, "lat_min": 38, "lat_max": 42, "lon_min": -102, "lon_max": -97},
            "period": {"start": "2020-01-01", "end": "2020-06-30"},
            "stores": {"root": tmp},
            "ingest": ingest,
        }
    )


# --- tokenizer --------------------------------------------------------------------------------------


def test_tokens_count_lines_for_every_line_ending() -> None:
    t = Tokens(b"a b\r\nc\rd  e f\n\n\r g")
    # Lines: "a b" | "c" | "d  e f" | "" | "" (the LF CR pair is two breaks) | " g" (no final break)
    assert t.count.tolist() == [2, 1, 3, 0, 0, 1]
    assert t.line_tokens(2) == ["d", "e", "f"]
    assert t.line_tokens(5) == ["g"]


def test_tokens_numbers_match_python_float_and_reject_garbage() -> None:
    tokens = [
        "0.1410",
        "-9999",
        ".5",
        "5.",
        "+0.25",
        "1e-3",
        "0012.5000",
        "abc",
        "nan",
        "inf",
        "0,25",
        "1.2.3",
        "-",
    ]
    t = Tokens("\n".join(tokens).encode())
    values, ok = t.numbers(np.arange(len(tokens)), 0)
    assert ok.tolist() == [True] * 7 + [False] * 6
    assert values[:7].tolist() == [float(x) for x in tokens[:7]]  # exactly, not approximately
    assert np.isnan(values[7:]).all()


def test_tokens_exact_on_many_random_decimals() -> None:
    rng = np.random.default_rng(1)
    vals = rng.uniform(-100, 100, 5000)
    text = "\n".join(f"{v:.{d}f}" for v, d in zip(vals, rng.integers(0, 9, vals.size), strict=True))
    t = Tokens(text.encode())
    parsed, ok = t.numbers(np.arange(vals.size), 0)
    assert ok.all()
    assert parsed.tolist() == [float(x) for x in text.split("\n")]


def test_tokens_datetimes_validate_calendar() -> None:
    stamps = [
        "2020/02/29 23:59",
        "2019/02/29 00:00",  # not a leap year
        "2020/13/01 00:00",
        "2020/01/01 24:00",
        "2020/01/01 00:60",
        "2020-01-01 00:00",
        "2020/1/01 00:00",
        "1799/12/31 00:00",
        "2000/02/29 12:30",
    ]
    t = Tokens("\n".join(stamps).encode())
    parsed, ok = t.datetimes(np.arange(len(stamps)), 0, 1)
    assert ok.tolist() == [True, False, False, False, False, False, False, False, True]
    assert parsed[0] == np.datetime64("2020-02-29T23:59")
    assert parsed[-1] == np.datetime64("2000-02-29T12:30")


def test_tokens_text_factorises_long_and_quoted_flags() -> None:
    flags = ["G", '"C02,D04"', "D01,D02,D03,D04,D05", "G", "x" * 70]
    t = Tokens("\n".join(flags).encode())
    text, ok = t.text(np.arange(len(flags)), 0, strip='"')
    assert text[:4].tolist() == ["G", "C02,D04", "D01,D02,D03,D04,D05", "G"]
    assert ok.tolist() == [True, True, True, True, False]


# --- header+values reader ----------------------------------------------------------------------------


def test_readers_are_registered_and_sniff_layouts() -> None:
    assert isinstance(reader_for(COSMOS_NAME, COSMOS_EXCERPT), HeaderValuesReader)
    assert isinstance(reader_for(COSMOS_NAME, COSMOS_EXCERPT), InSituReader)
    ceop = b"2017/08/10 00:00 2017/08/10 00:00 COSMOS COSMOS ARM-1 36.6 -97.4 322.0 0.00 0.19 0.1410 G M\n"
    assert isinstance(reader_for("x.stm", ceop), CeopSeparateReader)
    assert reader_for("x.stm", b"\x00\x01\x02\xff" * 50) is None
    assert reader_for("x.stm", b"") is None
    assert reader_for("x.stm", b"no good data here") is None


def test_reads_real_cosmos_excerpt_with_mixed_line_endings() -> None:
    content = HeaderValuesReader().read(COSMOS_NAME, COSMOS_EXCERPT)
    s = content.series[0]
    m = s.meta
    assert (m.network, m.station, m.sensor, m.variable) == ("COSMOS", "ARM-1", "Cosmic-ray-Probe", "sm")
    assert (m.lat, m.lon, m.elevation, m.depth_from, m.depth_to) == (36.6054, -97.4878, 322.0, 0.0, 0.19)
    assert s.time.dtype == np.dtype("datetime64[ns]")
    assert s.time[0] == np.datetime64("2017-08-10T00:00")
    np.testing.assert_allclose(s.values, [0.141, 0.139, 0.096, 0.097, 0.099])
    assert list(s.flags) == ["G", "G", "D03", "D03,D05", "G"]
    assert s.lines.tolist() == [3, 4, 5, 6, 7]  # the "\n\r" after the header is a blank line 2
    assert content.rejected == []


def test_reads_real_smosmania_excerpt_cr_only_and_missing_provider_flag() -> None:
    content = HeaderValuesReader().read(SMOSMANIA_NAME, SMOSMANIA_EXCERPT)
    s = content.series[0]
    assert s.meta.sensor == "ThetaProbe-ML2X"
    assert len(s.values) == 3 and content.rejected == []
    assert list(s.provider_flags) == ["M", "", "M"]


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r", "mixed"])
def test_line_endings_give_identical_series(eol: str) -> None:
    lines = records("2020-01-01", 2, 4, value=[0.1, 0.2, 0.3])
    text = header("NET", "S#1(a),b", 40.5, -99.5, 0.05, 0.05, "Hydraprobe II Sdi-12")
    if eol == "mixed":
        ends = ["\r\n", "\r", "\n"]
        text += "".join(ends[i % 3] + ln for i, ln in enumerate(lines)) + "\r\n"
    else:
        text += "".join(eol + ln for ln in lines) + eol
    s = read_hv(text.encode())
    assert s.meta.station == "S#1(a),b"
    assert s.meta.sensor == "Hydraprobe II Sdi-12"
    assert len(s.time) == 8
    assert s.lines.tolist() == list(range(2, 10))
    np.testing.assert_allclose(s.values[:4], [0.1, 0.2, 0.3, 0.1])
    assert s.time[-1] == np.datetime64("2020-01-02T18:00")


def test_missing_value_and_combined_flags() -> None:
    text = "\n".join(
        [
            header("NET", "ST", 40.5, -99.5, 0.05, 0.05, "Probe"),
            "2020/01/01 00:00 -9999 M M",
            "2020/01/01 01:00  0.2500 C02,D04 M",
            '2020/01/01 02:00  0.2500 "C01,D03" M',
            "2020/01/01 03:00  0.3000 G M",
        ]
    )
    s = read_hv(text.encode())
    assert np.isnan(s.values[0]) and s.flags[0] == "M"
    assert list(s.flags[1:]) == ["C02,D04", "C01,D03", "G"]


def test_longitude_0_360_is_normalised() -> None:
    text = header("NET", "ST", 40.5, 260.5, 0.05, 0.05, "Probe") + "\n2020/01/01 00:00 0.2 G M\n"
    assert read_hv(text.encode()).meta.lon == pytest.approx(-99.5)


def test_bad_lines_are_rejected_one_by_one_and_records_sorted() -> None:
    text = "\n".join(
        [
            header("NET", "ST", 40.5, -99.5, 0.05, 0.05, "Probe"),
            "2020/01/01 02:00 0.2 G M",  # line 2
            "2020/01/01 00:00 0.1 G M",  # line 3: out of order, kept
            "2020/01/01 01:00 0.15 G",  # line 4: no provider flag, kept
            "2020/01/01 03:00 abc G M",  # line 5: non-numeric
            "2020/01/01 04:00 0.2 G M extra",  # line 6: 6 fields
            "2020/13/01 05:00 0.2 G M",  # line 7: bad date
            "2020/01/01 02:00 0.9 G M",  # line 8: duplicate of line 2
            "2020/01/01",  # line 9: 1 field
            "",  # line 10: blank, ignored
            "2020/01/01 06:00 0.25 G M",  # line 11
        ]
    )
    content = HeaderValuesReader().read("NET/ST/" + NAME, text.encode())
    s = content.series[0]
    np.testing.assert_allclose(s.values, [0.1, 0.15, 0.2, 0.25])
    assert list(s.time.astype("datetime64[h]").astype(int) % 24) == [0, 1, 2, 6]
    assert s.lines.tolist() == [3, 4, 2, 11]
    by_line = {r.line or 0: r.reason for r in content.rejected}
    assert sorted(by_line) == [5, 6, 7, 8, 9]
    assert "'abc' is not a number" in by_line[5]
    assert "6 fields" in by_line[6]
    assert "2020/13/01 05:00" in by_line[7]
    assert "duplicate" in by_line[8]
    assert "1 fields" in by_line[9]
    assert all(r.file == "NET/ST/" + NAME for r in content.rejected)
    assert content.n_records == 9  # the blank line is not a record


@pytest.mark.parametrize(
    ("data", "line", "reason"),
    [
        (b"", None, "empty file"),
        (b"   \r\n\r\n", None, "empty file"),
        (b"\x00\x9f\x12garbage\x00" * 40, None, "binary"),
        (
            b"XX NET ST abc -99.5 100 0.05 0.05 Probe\n2020/01/01 00:00 0.1 G M\n",
            1,
            "LAT 'abc' is not a number",
        ),
        (b"XX NET ST 95 -99.5 100 0.05 0.05 Probe\n2020/01/01 00:00 0.1 G M\n", 1, "outside [-90, 90]"),
        (b"XX NET ST 40 -99.5 100 0.30 0.05 Probe\n2020/01/01 00:00 0.1 G M\n", 1, "DEPTH_TO"),
        (b"XX NET ST 40 -99.5 100 -0.05 0.05 Probe\n2020/01/01 00:00 0.1 G M\n", 1, "above the soil surface"),
        (b"\n\nXX NET ST 40 -99.5 100 nan 0.05 Probe\n2020/01/01 00:00 0.1 G M\n", 3, "not finite"),
        (b"no good data here", 1, "header has 4 fields"),
        (b"XX NET ST 40 -99.5 100 0.05 0.05 Probe\n", None, "no record lines"),
        (b"XX NET ST 40 -99.5 100 0.05 0.05 Probe\nfoo bar\nbaz\n", None, "no valid record line"),
    ],
)
def test_unusable_files_raise_with_file_line_and_reason(data: bytes, line: int | None, reason: str) -> None:
    with pytest.raises(InSituFileError) as err:
        HeaderValuesReader().read(NAME, data)
    assert err.value.file == NAME
    assert err.value.line == line
    assert reason in err.value.reason


def test_file_name_must_say_the_variable() -> None:
    data = b"XX NET ST 40 -99.5 100 0.05 0.05 Probe\n2020/01/01 00:00 0.1 G M\n"
    with pytest.raises(InSituFileError, match="ISMN pattern"):
        HeaderValuesReader().read("NET/ST/readme.stm", data)
    old = "XX_NET_ST_Soil-Moisture_0.050000_0.050000_Probe_20200101_20201231.stm"
    assert HeaderValuesReader().read(old, data).series[0].meta.variable == "sm"


def test_reads_every_header_values_fixture() -> None:
    files = sorted((ISMN_DATA / "Data_seperate_files_header_20170810_20180809").rglob("*.stm"))
    files += sorted((ISMN_DATA / "format_header_values").rglob("*.stm"))
    assert len(files) == 3
    for f in files:
        data = f.read_bytes()
        content = HeaderValuesReader().read(f.name, data)
        assert content.rejected == []
        s = content.series[0]
        n_records = sum(
            1 for ln in data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")[1:] if ln.strip()
        )
        assert len(s.values) == n_records == content.n_records
        assert np.all(np.diff(s.time.astype("int64")) > 0)


# --- quality control and daily means ---------------------------------------------------------------


def read_lines(lines: list[str]) -> SensorSeries:
    return read_hv("\n".join([header("NET", "ST", 40.5, -99.5, 0.05, 0.05, "Probe"), *lines]).encode())


def test_flag_mask_combined_flags_need_every_part_accepted() -> None:
    flags = np.array(["G", "D03", "C02,D04", "G,D04", "U", "M", "G,U"], dtype=object)
    assert list(flag_mask(flags, ["G"])) == [True, False, False, False, False, False, False]
    assert list(flag_mask(flags, ["G", "U"])) == [True, False, False, False, True, False, True]


def test_unknown_flags_are_reported_once_per_flag_and_not_good() -> None:
    s = read_lines(
        [
            "2020/01/01 00:00 0.2 G M",
            "2020/01/01 01:00 0.2 X9 M",
            "2020/01/01 02:00 0.2 G,Q M",
            "2020/01/01 03:00 0.2 X9 M",
            "2020/01/01 04:00 0.2 D10 M",
            "2020/01/01 05:00 0.2 C03,D01 M",
        ]
    )
    report = {r.reason.split("'")[1]: r for r in unknown_flags(s, ["G"])}
    assert set(report) == {"X9", "G,Q"}
    assert report["X9"].line == 3 and "on 2 values" in report["X9"].reason
    assert unknown_flags(s, ["G", "X9", "Q"]) == []  # accepted by the config: not unknown
    assert flag_mask(s.flags, ["G"]).sum() == 1


def test_daily_mean_needs_min_obs_per_day() -> None:
    # Day 1: 5 good values → no mean with min_obs_per_day=6. Day 2: 6 values → mean 0.35.
    day1 = [f"2020/01/01 {h:02d}:00 0.2 G M" for h in range(5)]
    day2 = [f"2020/01/02 {h:02d}:00 {v} G M" for h, v in enumerate([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])]
    s = read_lines(day1 + day2)
    d = qc_daily(s, IngestConfig(min_obs_per_day=6, min_days=1))
    assert list(d.daily.index) == [pd.Timestamp("2020-01-02")]
    assert d.daily.iloc[0] == pytest.approx(0.35)
    d5 = qc_daily(s, IngestConfig(min_obs_per_day=5, min_days=1))
    assert d5.daily.to_dict() == {
        pd.Timestamp("2020-01-01"): pytest.approx(0.2),
        pd.Timestamp("2020-01-02"): pytest.approx(0.35),
    }


def test_flagged_missing_and_impossible_values_are_excluded() -> None:
    # 6 good values (mean 0.3) plus a D03 value, a combined flag, -9999/M, NaN-like, <0 and >1 with flag G.
    good = [f"2020/01/01 {h:02d}:00 {0.3 + (h % 2) * 0.02 - 0.01:.2f} G M" for h in range(6)]
    bad = [
        "2020/01/01 06:00 0.9000 D03 M",
        "2020/01/01 07:00 0.9000 C02,D04 M",
        "2020/01/01 08:00 -9999 M M",
        "2020/01/01 09:00 -0.0100 G M",
        "2020/01/01 10:00 1.2000 G M",
        "2020/01/01 11:00 1.0000 G M",  # the upper bound itself is allowed
        "2020/01/01 12:00 -9999 G M",  # missing despite its flag
    ]
    s = read_lines(good + bad)
    d = qc_daily(s, IngestConfig(min_obs_per_day=6, min_days=1))
    assert d.daily.iloc[0] == pytest.approx((0.3 * 6 + 1.0) / 7)
    assert (d.counts.total, d.counts.bad_flag, d.counts.missing, d.counts.out_of_range) == (13, 3, 1, 2)
    assert d.counts.valid == 7


def test_utc_day_boundaries() -> None:
    t = np.array(["2020-01-01T23:59", "2020-01-02T00:00", "2020-01-02T00:30"], dtype="datetime64[ns]")
    out = daily_means(t, np.array([0.1, 0.3, 0.5]), 1)
    assert out.to_dict() == {
        pd.Timestamp("2020-01-01"): pytest.approx(0.1),
        pd.Timestamp("2020-01-02"): pytest.approx(0.4),
    }


@pytest.mark.parametrize(("days", "kept"), [(59, False), (60, True)])
def test_series_needs_min_days(days: int, kept: bool) -> None:
    s = read_lines(records("2020-01-01", days, 6))
    d = qc_daily(s, IngestConfig(min_obs_per_day=6, min_days=60))
    assert len(d.daily) == days
    assert d.kept is kept


# --- the ingest step --------------------------------------------------------------------------------


def make_folder(root: str) -> dict[str, str]:
    """A small ISMN folder: good files (several line endings), bad files and files to skip."""
    urls = {
        "good_crlf": write_stm(
            root, "NET", "ST1", (0.05, 0.05), "Probe A", records("2020-01-01", 70, 24, [0.2, 0.3]), "\r\n"
        ),
        "good_cr": write_stm(
            root, "NET", "ST1", (0.2, 0.2), "Probe A", records("2020-02-01", 65, 6, 0.25), "\r"
        ),
        "one_bad_line": write_stm(
            root,
            "NET2",
            "S#2(x),y",
            (0.0, 0.19),
            "Cosmic ray probe",
            [
                *records("2020-01-01", 30, 6, 0.1),
                "2020/01/31 00:00 oops G M",
                *records("2020-01-31", 40, 6, 0.12),
            ],
        ),
        "short": write_stm(root, "NET", "ST2", (0.05, 0.05), "Probe", records("2020-01-01", 59, 6, 0.3)),
        "bad_header": write_stm(
            root, "NET", "ST3", (0.05, 0.05), "Probe", records("2020-01-01", 70, 6), lat=float("nan")
        ),
        "other_var": write_stm(
            root, "NET", "ST1", (0.05, 0.05), "Thermo", records("2020-01-01", 70, 6, 12.0), var="ts"
        ),
    }
    urls["binary"] = stores.join(root, "NET", "ST4", stm_name("NET", "ST4", 0.05, 0.05, "P"))
    stores.write_bytes(urls["binary"], bytes(range(256)) * 8)
    urls["empty"] = stores.join(root, "NET", "ST5", stm_name("NET", "ST5", 0.05, 0.05, "P"))
    stores.write_bytes(urls["empty"], b"")
    urls["unknown_layout"] = stores.join(root, "NET", "ST6", stm_name("NET", "ST6", 0.05, 0.05, "P"))
    stores.write_bytes(urls["unknown_layout"], b"2020/01/01 00:00 0.2 G M\n2020/01/01 01:00 0.2 G M\n")
    urls["no_pattern"] = stores.join(root, "NET", "readme.stm")
    stores.write_bytes(urls["no_pattern"], header("NET", "ST", 40.5, -99.5, 0.05, 0.05, "P").encode())
    stores.write_bytes(stores.join(root, "NET", "ST1", "NET_NET_ST1_static_variables.csv"), b"x;y\n")
    stores.write_bytes(stores.join(root, "NET", "notes.txt"), b"not data")
    return urls


def check_ingest_output(cfg: RunConfig, out: dict[str, str]) -> None:
    ds = stores.open_zarr(out["insitu"], chunks=None)
    assert ds.soil_moisture.dims == ("series", "time")
    assert ds.soil_moisture.dtype == np.float32
    assert ds.sizes["series"] == 3
    assert list(ds.network.values.tolist()) == ["NET", "NET", "NET2"]
    assert list(ds.station.values.tolist()) == ["ST1", "ST1", "S#2(x),y"]
    assert list(ds.sensor.values.tolist()) == ["Probe A", "Probe A", "Cosmic ray probe"]
    np.testing.assert_allclose(ds.depth_from.values, [0.05, 0.2, 0.0])
    np.testing.assert_allclose(ds.depth_to.values, [0.05, 0.2, 0.19])
    np.testing.assert_allclose(ds.lat.values, 40.5)
    np.testing.assert_allclose(ds.elevation.values, 100.0)
    assert np.isnan(ds.clay.values).all() and ds.climate_class.values.tolist() == ["", "", ""]
    assert ds.source_file.values.tolist()[0] == "NET/ST1/" + stm_name("NET", "ST1", 0.05, 0.05, "Probe A")
    assert pd.Timestamp(ds.time.values[0]) == pd.Timestamp("2020-01-01")
    assert pd.Timestamp(ds.time.values[-1]) == pd.Timestamp("2020-04-05")  # ST1 20 cm: Feb 1 + 65 days - 1
    sm = ds.soil_moisture.values
    np.testing.assert_allclose(sm[0, :70], 0.25, rtol=1e-6)  # 24 values alternating 0.2/0.3
    assert np.isnan(sm[0, 70:]).all()
    assert np.isnan(sm[1, :31]).all() and np.allclose(sm[1, 31:], 0.25)
    # The day holding the bad line keeps its other 6 values; both parts of the series are there.
    np.testing.assert_allclose(sm[2, [0, 29, 30, 69]], [0.1, 0.1, 0.12, 0.12], rtol=1e-6)
    assert "somocloud_content_id" in ds.attrs and ds.attrs["somocloud_step"] == "ingest"
    assert ds.attrs["layouts"] == {"ismn-header-values": 4}

    report = stores.read_json(out["insitu_quarantine"])
    assert out["insitu_quarantine"] == cfg.store("insitu") + ".quarantine.json"
    by_file = {(r["file"].split("/")[1], r["line"]): r["reason"] for r in report}
    assert set(by_file) == {
        ("S#2(x),y", 182),
        ("ST1", 1),  # the static-variables CSV without the columns it needs
        ("ST3", 1),
        ("ST4", None),
        ("ST5", None),
        ("ST6", 1),
        ("readme.stm", None),
    }
    assert "'oops' is not a number" in by_file[("S#2(x),y", 182)]
    assert "row has 2 fields" in by_file[("ST1", 1)]  # no header row: read as ISMN columns
    assert "LAT 'nan' is not finite" in by_file[("ST3", 1)]
    assert "empty" in by_file[("ST5", None)]
    assert "binary" in by_file[("ST4", None)]
    assert "no reader" in by_file[("ST6", 1)]
    assert "ISMN pattern" in by_file[("readme.stm", None)]


def test_ingest_keeps_good_files_and_quarantines_bad_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = run_config(str(tmp_path))
    make_folder(cfg.store("ismn"))
    with caplog.at_level(logging.INFO, logger="somocloud.insitu"):
        out = ingest(cfg, Context(show_progress=False))
    check_ingest_output(cfg, out)
    summary = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ingest:")]
    assert len(summary) == 1
    assert "10 files: 4 read, 5 quarantined, 1 other variables; 1 bad lines dropped" in summary[0]
    assert "4 series: 3 kept, 1 dropped (< 60 days), 0 duplicates" in summary[0]


def test_ingest_on_dask_matches_in_process(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    cfg = run_config(str(tmp_path), parallel_min_files=1, files_per_task=3)
    make_folder(cfg.store("ismn"))
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        out = ingest(cfg, Context(show_progress=False, client=client))
    check_ingest_output(cfg, out)


def test_ingest_fails_clearly_without_usable_files(tmp_path: Path) -> None:
    cfg = run_config(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="store ismn="):
        ingest(cfg, Context(show_progress=False))
    write_stm(cfg.store("ismn"), lines=records("2020-01-01", 3, 6))
    with pytest.raises(ValueError, match="no usable in-situ series"):
        ingest(cfg, Context(show_progress=False))
    assert stores.read_json(cfg.store("insitu") + ".quarantine.json") == []


def test_ingest_on_memory_store() -> None:
    root = f"memory://insitu-test-{uuid.uuid4().hex}"
    cfg = run_config(root)
    make_folder(cfg.store("ismn"))
    out = ingest(cfg, Context(show_progress=False))
    assert out["insitu"].startswith("memory://")
    check_ingest_output(cfg, out)
    assert json.loads(stores.read_text(out["insitu_quarantine"]))


def test_process_file_never_raises(tmp_path: Path) -> None:
    url = write_stm(str(tmp_path), lines=["garbage"] * 3)
    name = Path(url).name
    result = process_file(url, name, IngestConfig())
    assert result.series == [] and result.rejected[0].file == name
    assert result.rejected[0].reason.startswith("no valid record line")


def test_too_many_bad_lines_reject_the_whole_file(tmp_path: Path) -> None:
    lines = [*records("2020-01-01", 1, 4), *["2020/01/02 00:00 x G M"] * 5]
    url = write_stm(str(tmp_path), lines=lines)
    result = process_file(url, Path(url).name, IngestConfig())
    assert result.layout is None and len(result.rejected) == 1
    assert "5 of 9 record lines are bad" in result.rejected[0].reason
    assert "line 6" in result.rejected[0].reason
    relaxed = process_file(url, Path(url).name, IngestConfig(max_bad_line_fraction=0.6))
    assert relaxed.layout == "ismn-header-values" and len(relaxed.rejected) == 5


def test_read_daily_series_is_strict_and_reads_any_layout(tmp_path: Path) -> None:
    url = write_stm(str(tmp_path), lines=records("2020-01-01", 3, 6, 0.3))
    [d] = read_daily_series(url, IngestConfig(min_days=2))
    assert d.kept and d.daily.tolist() == pytest.approx([0.3, 0.3, 0.3])
    assert d.meta.network == "NET"
    bad = stores.join(str(tmp_path), "NET", "ST9", stm_name("NET", "ST9", 0.05, 0.05, "P"))
    stores.write_bytes(bad, b"")
    with pytest.raises(InSituFileError, match="empty file"):
        read_daily_series(bad)


def test_factorize_rows_finds_runs_without_hashing() -> None:
    """Equal consecutive tokens share a code by run detection (a file's date repeats for a whole day);
    a regression once hashed every row, which was correct but slow."""
    from somocloud.insitu.tokens import _factorize_rows

    words = [np.array([5, 5, 7, 7, 7, 9, 5], dtype=np.uint64)]
    codes, first = _factorize_rows(words, hash_above=10)
    assert codes.tolist() == [0, 0, 1, 1, 1, 2, 3]  # runs: the last 5 is a new run, not hashed
    assert first.tolist() == [0, 2, 5, 6]
    codes, first = _factorize_rows(words, hash_above=2)  # too many runs: hashed, equal rows share a code
    assert codes[0] == codes[1] == codes[6] and len(set(codes.tolist())) == 3
