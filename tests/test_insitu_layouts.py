"""In-situ layouts beyond header+values: CEOP-separate, the old combined CEOP layout, zip archives read
in place (local, memory://, s3://), `*_static_variables.csv`, `Metadata.xml` and the USCRN table."""

from __future__ import annotations

import io
import shutil
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from somocloud import stores
from somocloud.config import IngestConfig, RunConfig, config_from_dict
from somocloud.context import Context
from somocloud.insitu import (
    CeopCombinedReader,
    CeopSeparateReader,
    InSituFileError,
    UscrnDailyReader,
    ingest,
    inventory,
    parse_metadata_xml,
    parse_static_variables,
    read_daily_series,
    reader_for,
)
from tests.test_insitu import ISMN_DATA, header, records, run_config, stm_name

DATA = Path(__file__).parent / "data"
HEADER_DIR = ISMN_DATA / "Data_seperate_files_header_20170810_20180809"
ARM1_STATIC = HEADER_DIR / "COSMOS" / "ARM-1" / "COSMOS_COSMOS_ARM-1_static_variables.csv"
CEOP_FILE = (
    ISMN_DATA / "format_ceop_sep" / "SMOSMANIA"
    / "SMOSMANIA_SMOSMANIA_Narbonne_sm_0.050000_0.050000_ThetaProbe-ML2X_20070101_20070131.stm"
)  # fmt: skip
USCRN_FILE = DATA / "uscrn" / "crn_2020_subset.parquet"
COMBINED_NAME = "SMOSMANIA/Narbonne/SMOSMANIA_SMOSMANIA_Narbonne_20101021_20101022.stm"


def config_for(root: str, ismn: str, **ingest: object) -> RunConfig:
    """A run config whose `ismn` store is `ismn` (a folder, a zip archive or one file)."""
    return config_from_dict(
        {
            "grid": {"resolution": 1.0, "lat_min": 38, "lat_max": 42, "lon_min": -102, "lon_max": -97},
            "period": {"start": "2020-01-01", "end": "2020-06-30"},
            "stores": {"root": root, "ismn": ismn},
            "ingest": ingest,
        }
    )


# --- CEOP separate -----------------------------------------------------------------------------------


def ceop_line(stamp: str, value: str, flag: str = "G", lat: str = "43.15000", depth: str = "0.05") -> str:
    return (
        f"{stamp} {stamp} SMOSMANIA  SMOSMANIA       Narbonne          {lat}     2.95670  112.00    "
        f"{depth}    {depth}   {value} {flag} M"
    )


def test_ceop_separate_fixture_reads_like_its_header_values_twin() -> None:
    data = CEOP_FILE.read_bytes()
    assert isinstance(reader_for(CEOP_FILE.name, data[:4096]), CeopSeparateReader)
    content = CeopSeparateReader().read(CEOP_FILE.name, data)
    twin = (ISMN_DATA / "format_header_values" / "SMOSMANIA" / CEOP_FILE.name).read_bytes()
    hv = reader_for(CEOP_FILE.name, twin[:4096])
    assert hv is not None
    ref = hv.read(CEOP_FILE.name, twin).series[0]
    s = content.series[0]
    assert content.rejected == [] and content.layout == "ismn-ceop-separate"
    assert (s.meta.network, s.meta.station, s.meta.sensor) == ("SMOSMANIA", "Narbonne", "ThetaProbe-ML2X")
    assert (s.meta.lat, s.meta.lon, s.meta.elevation) == (43.15, 2.9567, 112.0)
    assert (s.meta.depth_from, s.meta.depth_to) == (0.05, 0.05)
    np.testing.assert_array_equal(s.time, ref.time)
    np.testing.assert_array_equal(s.values, ref.values)
    assert s.flags.tolist() == ref.flags.tolist()


def test_ceop_separate_depths_come_from_the_file_name() -> None:
    name = "SCAN_SCAN_Abrams_sm_0.050800_0.050800_Hydraprobe_20200101_20200102.stm"
    data = "\r\n".join(ceop_line(f"2020/01/01 {h:02d}:00", "0.2000") for h in range(3)).encode()
    s = CeopSeparateReader().read(name, data).series[0]
    assert (s.meta.depth_from, s.meta.depth_to, s.meta.sensor) == (0.0508, 0.0508, "Hydraprobe")


def test_ceop_separate_bad_lines() -> None:
    name = "SMOSMANIA_SMOSMANIA_Narbonne_sm_0.050000_0.050000_ThetaProbe-ML2X_20200101_20200102.stm"
    lines = [
        ceop_line("2020/01/01 00:00", "0.2000"),  # 1
        ceop_line("2020/01/01 01:00", "0.2100", lat="43.150"),  # 2: same latitude, other format: kept
        ceop_line("2020/01/01 02:00", "0.2200", lat="44.15000"),  # 3: another station: rejected
        ceop_line("2020/01/01 03:00", "0.2300") + " extra",  # 4: 16 fields
        ceop_line("2020/01/01 04:00", "-9999", "M"),  # 5: missing, kept as NaN
        ceop_line("2020/01/01 00:00", "0.9000"),  # 6: duplicate of line 1
    ]
    content = CeopSeparateReader().read(name, "\n".join(lines).encode())
    s = content.series[0]
    assert s.lines.tolist() == [1, 2, 5]
    np.testing.assert_array_equal(s.values, [0.2, 0.21, np.nan])
    reasons = {r.line: r.reason for r in content.rejected}
    assert sorted(reasons) == [3, 4, 6]
    assert "station fields differ from line 1" in reasons[3]
    assert "16 fields, expected 15" in reasons[4]
    assert "duplicate" in reasons[6]
    with pytest.raises(InSituFileError, match="ISMN pattern"):
        CeopSeparateReader().read("ceop.stm", "\n".join(lines).encode())


# --- old combined CEOP ----------------------------------------------------------------------------------


def combined_line(
    stamp: str, depth: float, ts: float, ts_flag: str, sm: float, sm_flag: str, dfrom: str = "-"
) -> str:
    """One record of the old combined CEOP layout (as in ISMN's description; -999.99 = missing)."""
    return (
        f"{stamp} {stamp} SMOSMANIA  SMOSMANIA       Narbonne          43.15000     2.95670  112.00 {dfrom}"
        f"   {depth:4.2f} {ts:7.2f} {ts_flag} {sm:8.4f} {sm_flag}"
    )


def combined_file(eol: str = "\r\n") -> bytes:
    """8 hours × 3 depths, depths interleaved per time stamp as the layout has them."""
    lines = []
    for h in range(8):
        stamp = f"2010/10/21 {h:02d}:00"
        for k, depth in enumerate((0.05, 0.10, 0.30)):
            sm = -999.99 if (h, k) == (3, 1) else 0.20 + 0.01 * k + 0.001 * h
            ts = -999.99 if (h, k) == (5, 2) else 12.0 + k - 0.1 * h
            lines.append(combined_line(stamp, depth, ts, "U", sm, "G" if h % 4 else "D05"))
    return (eol.join(lines) + eol).encode()


def test_combined_ceop_gives_soil_moisture_and_temperature_per_depth() -> None:
    data = combined_file()
    assert isinstance(reader_for(COMBINED_NAME, data[:4096]), CeopCombinedReader)
    content = CeopCombinedReader().read(COMBINED_NAME, data)
    assert content.rejected == [] and content.n_records == 24
    got = {(s.meta.variable, s.meta.depth_to): s for s in content.series}
    assert sorted(got) == [("sm", 0.05), ("sm", 0.1), ("sm", 0.3), ("ts", 0.05), ("ts", 0.1), ("ts", 0.3)]
    sm10 = got[("sm", 0.1)]
    assert (sm10.meta.network, sm10.meta.station, sm10.meta.sensor) == ("SMOSMANIA", "Narbonne", "n.s")
    assert (sm10.meta.depth_from, sm10.meta.lat, sm10.meta.elevation) == (0.1, 43.15, 112.0)
    expected = [0.21 + 0.001 * h for h in range(8)]
    expected[3] = np.nan  # -999.99
    np.testing.assert_allclose(sm10.values, expected)
    assert sm10.flags.tolist() == ["D05", "G", "G", "G", "D05", "G", "G", "G"]
    assert sm10.lines.tolist() == [2 + 3 * h for h in range(8)]
    assert sm10.provider_flags.tolist() == [""] * 8
    ts30 = got[("ts", 0.3)]
    assert np.isnan(ts30.values[5]) and ts30.values[0] == pytest.approx(14.0)
    assert ts30.flags.tolist() == ["U"] * 8


def test_combined_ceop_depth_ranges_and_bad_lines() -> None:
    lines = [
        combined_line("2010/10/21 00:00", 0.10, 12.0, "U", 0.20, "G", dfrom="0.00"),  # 1: range 0-0.10
        combined_line("2010/10/21 00:00", 0.30, 12.0, "U", 0.25, "G"),  # 2
        combined_line("2010/10/21 01:00", 0.10, 12.0, "U", 0.21, "G", dfrom="0.20"),  # 3: upside down
        combined_line("2010/10/21 01:00", 0.30, 12.0, "U", 0.26, "G").replace("43.15000", "43.2"),  # 4
        combined_line("2010/10/21 00:00", 0.30, 12.0, "U", 0.99, "G"),  # 5: duplicate of line 2
        combined_line("2010/10/21 02:00", 0.30, 12.0, "U", 0.27, "G")[:-6],  # 6: truncated (15 fields)
        combined_line("2010/10/21 03:00", 0.30, 12.0, "U", 0.28, "G"),  # 7
    ]
    content = CeopCombinedReader().read(COMBINED_NAME, "\n".join(lines).encode())
    got = {(s.meta.variable, s.meta.depth_from, s.meta.depth_to): s for s in content.series}
    assert sorted(got) == [("sm", 0.0, 0.1), ("sm", 0.3, 0.3), ("ts", 0.0, 0.1), ("ts", 0.3, 0.3)]
    np.testing.assert_allclose(got[("sm", 0.3, 0.3)].values, [0.25, 0.28])
    reasons = {r.line: r.reason for r in content.rejected}
    assert sorted(reasons) == [3, 4, 5, 6]  # the duplicate is reported once, not per variable
    assert "impossible depth range 0.2 to 0.1" in reasons[3]
    assert "station fields differ" in reasons[4]
    assert "duplicate" in reasons[5]
    assert "15 fields, expected 16" in reasons[6]


def test_ingest_keeps_only_soil_moisture_of_combined_ceop(tmp_path: Path) -> None:
    cfg = run_config(str(tmp_path), min_days=1, min_obs_per_day=2)
    stores.write_bytes(stores.join(cfg.store("ismn"), COMBINED_NAME), combined_file("\r"))
    out = ingest(cfg, Context(show_progress=False))
    ds = stores.open_zarr(out["insitu"], chunks=None)
    assert ds.depth_to.values.tolist() == [0.05, 0.1, 0.3]
    assert ds.sensor.values.tolist() == ["n.s"] * 3
    # Day mean of the G values (hours 1-3, 5-7; hour 3 at 10 cm is missing): 0.2 + k/100 + h/1000.
    np.testing.assert_allclose(ds.soil_moisture.values[:, 0], [0.204, 0.21 + 0.021 / 5, 0.224], rtol=1e-6)
    assert ds.attrs["layouts"] == {"ismn-ceop-combined": 1}


# --- zip archives --------------------------------------------------------------------------------------


def zip_bytes(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def good_stm(station: str, days: int = 61) -> tuple[str, bytes]:
    name = f"NET/{station}/{stm_name('NET', station, 0.05, 0.05, 'Probe')}"
    body = "\n".join(
        [header("NET", station, 40.5, -99.5, 0.05, 0.05, "Probe"), *records("2020-01-01", days, 6, 0.3)]
    )
    return name, body.encode()


def corrupt_member(data: bytes, member: str) -> bytes:
    """Flip bytes in the middle of one member's compressed data (its CRC or inflate fails on read)."""
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo(member)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    mid = start + info.compress_size // 2
    out = bytearray(data)
    out[mid : mid + 8] = bytes(b ^ 0xFF for b in out[mid : mid + 8])
    return bytes(out)


def test_zip_fixtures_list_members_in_place() -> None:
    inv = inventory(str(ISMN_DATA / "zip_archives"))
    names = [s.name for s in inv.data]
    assert len(names) == 13 and inv.rejected == []
    assert "multinetwork/header_values/Data_header_values.zip/SCAN/AdamsRanch#1/" in names[-4][:72]
    arm1 = next(s for s in inv.data if s.name.startswith("header/") and "ARM-1" in s.name)
    assert arm1.member == "COSMOS/ARM-1/" + Path(arm1.name).name
    assert arm1.static is not None and arm1.static.name.endswith("COSMOS_COSMOS_ARM-1_static_variables.csv")
    assert [d.name for d in inv.datasets] == [
        "ceop/Data_seperate_files_20170810_20180809.zip/Metadata.xml",
        "header/Data_seperate_files_header_20170810_20180809.zip/Metadata.xml",
    ]
    assert inv.ignored == 2  # python_metadata/metadata.log and .npy


def test_ingest_from_a_zip_url_on_memory_store() -> None:
    root = f"memory://insitu-zip-{uuid.uuid4().hex}"
    members = dict([good_stm("A"), good_stm("B")])
    members["NET/B/NET_NET_B_static_variables.csv"] = ARM1_STATIC.read_bytes()
    members["Metadata.xml"] = (HEADER_DIR / "Metadata.xml").read_bytes()
    data = zip_bytes(members)
    zip_url = f"{root}/download/Data_NET.zip"
    stores.write_bytes(zip_url, corrupt_member(data, next(iter(members))))
    cfg = config_for(root, zip_url)
    out = ingest(cfg, Context(show_progress=False))
    ds = stores.open_zarr(out["insitu"], chunks=None)
    assert ds.station.values.tolist() == ["B"]
    assert ds.source_file.values.tolist() == ["Data_NET.zip/" + good_stm("B")[0]]
    assert ds.clay.values.tolist() == [0.23] and ds.climate_class.values.tolist() == ["Cfa"]
    assert ds.land_cover.values.tolist() == [130.0]
    assert ds.attrs["source_datasets"][0]["north"] == 71.3298
    report = stores.read_json(out["insitu_quarantine"])
    assert [(r["file"], r["line"]) for r in report] == [("Data_NET.zip/" + good_stm("A")[0], None)]
    assert "cannot read file" in report[0]["reason"]


def test_zip_on_s3(s3_endpoint: str) -> None:
    from tests.conftest import BUCKET, SECRET_KEY

    url = f"s3://{BUCKET}/insitu-{uuid.uuid4().hex}/Data_header.zip"
    stores.write_bytes(
        url, (ISMN_DATA / "zip_archives" / "header" / HEADER_DIR.with_suffix(".zip").name).read_bytes()
    )
    series = read_daily_series(url, IngestConfig(min_days=1))
    assert sorted(d.meta.station for d in series) == ["ARM-1", "Barrow-ARM"]
    assert {d.meta.static.climate_class for d in series} == {"Cfa", "ET"}
    assert all(SECRET_KEY not in d.meta.source_file for d in series)


def test_bad_archives_are_quarantined_and_the_rest_read(tmp_path: Path) -> None:
    root = tmp_path / "ismn"
    root.mkdir()
    (root / "broken.zip").write_bytes(b"PK\x03\x04 this is not a zip archive")
    inner = zip_bytes(dict([good_stm("A")]))
    (root / "nested.zip").write_bytes(zip_bytes({"inner.zip": inner, good_stm("C")[0]: good_stm("C")[1]}))
    shutil.copytree(HEADER_DIR, root / "unpacked")  # the same stations as the zip below: duplicates
    shutil.copy(ISMN_DATA / "zip_archives" / "header" / HEADER_DIR.with_suffix(".zip").name, root)
    inv = inventory(str(root))
    assert {(r.file, r.reason.split(":")[0]) for r in inv.rejected} == {
        ("broken.zip", "not a readable zip archive"),
        ("nested.zip/inner.zip", "zip archive inside a zip archive is not read"),
    }
    cfg = config_for(str(tmp_path), str(root), min_days=30)
    out = ingest(cfg, Context(show_progress=False))
    ds = stores.open_zarr(out["insitu"], chunks=None)
    assert ds.station.values.tolist() == ["ARM-1", "Barrow-ARM", "C"]
    report = stores.read_json(out["insitu_quarantine"])
    dups = [r for r in report if "same series as" in r["reason"]]
    assert sorted(r["file"].split("/")[0] for r in dups) == ["unpacked", "unpacked"]


# --- static variables and Metadata.xml -------------------------------------------------------------


def test_static_variables_pick_the_best_layer_for_the_sensor_depth() -> None:
    statics, rejected = parse_static_variables(ARM1_STATIC.name, ARM1_STATIC.read_bytes())
    assert rejected == []
    top = statics.for_depth(0.0, 0.19)
    assert (top.clay, top.sand, top.silt, top.saturation) == (0.23, 0.36, 0.41, 0.46)
    assert top.organic_carbon == pytest.approx(0.0127)
    assert (top.land_cover, top.climate_class) == (130.0, "Cfa")
    deep = statics.for_depth(0.5, 0.5)
    assert (deep.clay, deep.sand, deep.saturation) == (0.29, 0.29, 0.44)
    assert statics.for_depth(0.3, 0.3).clay == 0.23  # touches both layers equally: the first wins
    assert np.isnan(statics.for_depth(1.5, 2.0).clay)  # no layer reaches 1.5 m


def test_static_variables_without_header_latin1_and_bad_rows() -> None:
    rows = [
        "clay fraction;% weight;0.00;0.30;12.00;;HWSD;x",
        "sand fraction;% weight;0.00;abc;50.00;;HWSD;x",  # line 2: bad depth
        "silt fraction;% weight;0.00",  # line 3: too short
        "land cover classification;;;;10;Cropland, rainfed;CCI_landcover_2000;ESA",
        "land cover classification;;;;11;Cropland;CCI_landcover_2005;ESA",
        'climate classification;;;;BSk;"Arid; Steppe, Cold";koeppen_geiger_2007;Peel2007;0.1°',
    ]
    data = "\r".join(rows).encode("latin-1")
    statics, rejected = parse_static_variables("st.csv", data)
    meta = statics.for_depth(0.05, 0.05)
    assert meta.clay == 0.12 and np.isnan(meta.sand) and np.isnan(meta.silt)
    assert (meta.land_cover, meta.climate_class) == (11.0, "BSk")  # 2005 is newer than 2000
    assert [(r.line, r.reason.split(" ")[0]) for r in rejected] == [(2, "'sand"), (3, "row")]


def test_metadata_xml_and_a_garbled_one() -> None:
    meta = parse_metadata_xml("Metadata.xml", (HEADER_DIR / "Metadata.xml").read_bytes())
    assert meta.title == "International In Situ Soil Moisture Database - Version 0.1"
    assert (meta.west, meta.east, meta.south, meta.north) == (-156.6287, 151.3092, -41.6694, 71.3298)
    assert (meta.time_start, meta.time_end) == ("2017-08-10T00:00:00", "2018-08-09T23:59:59")
    with pytest.raises(InSituFileError) as err:
        parse_metadata_xml("Metadata.xml", b"<?xml version='1.0'?>\n<a>\n<b></a>")
    assert err.value.line == 3 and "does not parse" in err.value.reason


# --- USCRN daily ------------------------------------------------------------------------------------------


def test_uscrn_fixture_gives_one_daily_series_per_station_and_depth() -> None:
    data = USCRN_FILE.read_bytes()
    assert isinstance(reader_for(USCRN_FILE.name, data[:4096]), UscrnDailyReader)
    content = UscrnDailyReader().read(USCRN_FILE.name, data)
    assert content.rejected == [] and content.n_records == 4 * 366
    assert len(content.series) == 20
    table = pd.read_parquet(USCRN_FILE)
    s = next(s for s in content.series if s.meta.station == "03739" and s.meta.depth_to == 0.2)
    rows = table[table.wban == "03739"]
    assert s.daily and not s.has_flags
    assert (s.meta.network, s.meta.sensor, s.meta.lat, s.meta.lon) == ("USCRN", "USCRN-daily", 37.29, -75.93)
    assert np.isnan(s.meta.elevation) and s.meta.depth_from == 0.2
    np.testing.assert_array_equal(s.values, rows.soil_moisture_20_daily.to_numpy())
    np.testing.assert_array_equal(s.time, rows.lst_date.to_numpy("datetime64[ns]"))
    assert s.lines.tolist() == (rows.index.to_numpy() + 1).tolist()


def test_uscrn_qc_ignores_flags_and_min_obs_per_day(tmp_path: Path) -> None:
    cfg = IngestConfig(min_obs_per_day=24, min_days=60, quality_flags=["G"])
    series = read_daily_series(str(USCRN_FILE), cfg)
    kept = sorted((d.meta.station, d.meta.depth_to) for d in series if d.kept)
    assert len(kept) == 15 and {k[0] for k in kept} == {"03739", "04236", "54796"}
    d = next(d for d in series if d.meta.station == "54796" and d.meta.depth_to == 0.05)
    table = pd.read_parquet(USCRN_FILE)
    col = table[table.wban == "54796"].soil_moisture_5_daily.to_numpy()
    assert len(d.daily) == np.isfinite(col).sum() and d.daily.iloc[0] == col[np.isfinite(col)][0]


def test_uscrn_bad_rows_and_sentinels() -> None:
    table = pd.DataFrame(
        {
            "wban": ["1", "1", "1", "1", "2", "3"],
            "lst_date": pd.to_datetime(
                ["2020-01-01", "2020-01-02", "2020-01-01", None, "2020-01-01", "2020-01-01"]
            ),
            "longitude": [-100.0, -100.0, -100.0, -100.0, -90.0, -90.0],
            "latitude": [40.0, 40.0, 40.0, 40.0, 35.0, 95.0],
            "soil_moisture_5_daily": [0.2, -99.0, 0.3, 0.1, 0.25, 0.3],
        }
    )
    table.loc[1, "longitude"] = -100.5  # row 2: the station moved?
    buf = io.BytesIO()
    table.to_parquet(buf)
    content = UscrnDailyReader().read("x.parquet", buf.getvalue())
    reasons = {r.line: r.reason for r in content.rejected}
    assert sorted(reasons) == [2, 3, 4, 6]
    assert "coordinates differ from row 1" in reasons[2]
    assert "duplicate" in reasons[3]
    assert "not a date" in reasons[4]
    assert "outside [-90, 90]" in reasons[6]
    assert [(s.meta.station, s.values.tolist()) for s in content.series] == [("1", [0.2]), ("2", [0.25])]
    table["soil_moisture_5_daily"] = [-99.0, -9999.0, 0.2, 0.2, 0.2, 0.2]
    table["latitude"] = 40.0
    table["longitude"] = -100.0
    buf = io.BytesIO()
    table.to_parquet(buf)
    s = UscrnDailyReader().read("x.parquet", buf.getvalue()).series[0]
    assert np.isnan(s.values).all() and s.values.size == 2  # both sentinels are missing
    with pytest.raises(InSituFileError, match="not a USCRN daily table"):
        buf = io.BytesIO()
        table.drop(columns=["soil_moisture_5_daily"]).to_parquet(buf)
        UscrnDailyReader().read("x.parquet", buf.getvalue())


def test_ingest_of_a_uscrn_store(tmp_path: Path) -> None:
    cfg = config_for(str(tmp_path), str(USCRN_FILE))
    out = ingest(cfg, Context(show_progress=False))
    ds = stores.open_zarr(out["insitu"], chunks=None)
    assert ds.sizes["series"] == 15 and set(ds.network.values.tolist()) == {"USCRN"}
    assert ds.depth_to.values.tolist()[:5] == [0.05, 0.1, 0.2, 0.5, 1.0]
    assert ds.attrs["layouts"] == {"uscrn-daily": 1}
    assert stores.read_json(out["insitu_quarantine"]) == []
