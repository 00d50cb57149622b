"""Bad input: a corpus of malformed files (written here, plus ISMN's malformed fixture) ingested
together with good files. Every file is either read by a documented rule (its bad lines listed) or
rejected with file, line and reason; the run never crashes and keeps every good file."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from somocloud import stores
from somocloud.config import IngestConfig
from somocloud.context import Context
from somocloud.insitu import ingest, inventory, process_batch
from tests.test_insitu import ISMN_DATA, header, records, run_config, stm_name
from tests.test_insitu_layouts import ceop_line, combined_file, corrupt_member, good_stm, zip_bytes

DAYS = 65
"""Good files have this many days of 6 good values (more than `min_days`)."""


@dataclass(frozen=True)
class Expect:
    """What must become of one corpus file.

    Attributes:
        series: Series kept in the store (0 for a rejected or ignored file).
        lines: For a read file: {line: reason fragment} of exactly its reported lines.
        file_line: For a rejected file: the reported line (None for the whole file).
        reason: For a rejected file: a fragment of the reason.
    """

    series: int = 0
    lines: dict[int | None, str] | None = None
    file_line: int | None = None
    reason: str = ""


def hv(
    station: str, body: list[str], sensor: str = "Probe", eol: str = "\n", head: str | None = None
) -> tuple[str, bytes]:
    """A header+values file of station `station` (path relative to the store, bytes)."""
    name = f"NET/{station}/{stm_name('NET', station, 0.05, 0.05, sensor)}"
    first = head if head is not None else header("NET", station, 40.5, -99.5, 0.05, 0.05, sensor)
    return name, (eol.join([first, *body]) + eol).encode("latin-1")


def good(value: float = 0.3) -> list[str]:
    return records("2020-01-01", DAYS, 6, value)


def build_corpus() -> dict[str, tuple[bytes, Expect]]:
    """{path: (bytes, expectation)}; line numbers count the header as line 1."""
    corpus: dict[str, tuple[bytes, Expect]] = {}

    def add(item: tuple[str, bytes], expect: Expect) -> None:
        corpus[item[0]] = (item[1], expect)

    n = len(good()) + 1  # last line number of a good body
    # Good files in several line endings; a Latin-1 station name; tabs and extra blanks.
    add(hv("GOOD1", good(), eol="\r\n"), Expect(1, {}))
    add(hv("GOOD2", good(0.25), eol="\r"), Expect(1, {}))
    add(hv("Gr\xfcn#3(a),b", [ln.replace(" ", "\t ") for ln in good()], sensor="Theta Probe"), Expect(1, {}))
    # Record-level problems: the file is read, exactly these lines are reported.
    add(hv("TRUNC", [*good(), "2020/03/06 00:00 0.2"]), Expect(1, {n + 1: "3 fields"}))
    add(hv("LONG", [*good(), "2020/03/06 00:00 0.2 G M extra junk"]), Expect(1, {n + 1: "7 fields"}))
    add(hv("HUGE", [*good(), f"2020/03/06 00:00 {'9' * 5000} G M"]), Expect(1, {n + 1: "is not a number"}))
    add(
        hv(
            "NONNUM",
            [*good(), "2020/03/06 00:00 abc G M", "2020/03/06 01:00 0,25 G M", "2020/03/06 02:00 nan G M"],
        ),
        Expect(1, {n + 1: "'abc'", n + 2: "'0,25'", n + 3: "'nan'"}),
    )
    add(hv("UNSORTED", list(reversed(good()))), Expect(1, {}))
    add(
        hv("DUPS", [*good(), good()[5].replace("0.3000", "0.9000")]),
        Expect(1, {n + 1: "duplicate timestamp"}),
    )
    add(
        hv("BADDATE", [*good(), "2020/02/30 00:00 0.2 G M", "2020/03/06 25:00 0.2 G M"]),
        Expect(1, {n + 1: "2020/02/30", n + 2: "25:00"}),
    )
    add(hv("DATEONLY", [*good(), "2020/03/06"]), Expect(1, {n + 1: "1 fields"}))
    add(hv("IMPOSSIBLE", [*good(), "2020/03/06 00:00 -0.5 G M", "2020/03/06 01:00 1.5 G M"]), Expect(1, {}))
    add(
        hv("UNKNOWNFLAG", [*good(), "2020/03/06 00:00 0.2 X99 M", "2020/03/06 01:00 0.2 X99 M"]),
        Expect(1, {n + 1: "unknown quality flag 'X99' on 2"}),
    )
    add(hv("QUOTED", [ln.replace(" G ", ' "G" ') for ln in good()]), Expect(1, {}))
    garbage = bytes(np.random.default_rng(3).integers(0, 256, 300, dtype=np.uint8))
    name, data = hv("GARBAGETAIL", good())
    tail = garbage.replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b"")
    add((name, data + tail + b"\n"), Expect(1, {data.count(b"\n") + 1: ""}))  # one garbage line
    # Whole-file problems.
    add(
        hv("BADHEADER", good(), head="XX NET BADHEADER 40.5 -99.5 100 0.05"),
        Expect(file_line=1, reason="header has 7 fields"),
    )
    add(
        hv("GARBLED", good(), head="XX NET GARBLED \xff\xfe\x80 -99.5 100 0.05 0.05 Probe"),
        Expect(file_line=1, reason="LAT"),
    )
    add((hv("NOHEADER", [])[0], "\n".join(good()).encode()), Expect(file_line=1, reason="no reader"))
    add(hv("HEADERONLY", []), Expect(reason="no record lines"))
    add(
        hv("MOSTLYBAD", [*good()[:10], *["2020/03/06 00:00 bad G M"] * 11]),
        Expect(reason="11 of 21 record lines are bad"),
    )
    add(("NET/EMPTY/" + stm_name("NET", "EMPTY", 0.05, 0.05, "P"), b""), Expect(reason="empty file"))
    add(
        ("NET/BLANK/" + stm_name("NET", "BLANK", 0.05, 0.05, "P"), b" \r\n\t\r\n"),
        Expect(reason="empty file"),
    )
    add(
        ("NET/BINARY/" + stm_name("NET", "BINARY", 0.05, 0.05, "P"), bytes(range(256)) * 20),
        Expect(reason="binary"),
    )
    malformed = (ISMN_DATA / "malformed" / "mal_formed_file.txt").read_bytes()
    add(
        ("malformed/" + stm_name("NET", "MAL", 0.05, 0.05, "P"), malformed),
        Expect(file_line=1, reason="no reader"),
    )
    add(("malformed/mal_formed_file.txt", malformed), Expect())  # not a data file name: ignored
    add(
        ("NET/readme.stm", b"Station files of network NET\nsee https://ismn.earth\n"),
        Expect(file_line=1, reason="no reader"),
    )
    add(("NET/notes.stm", hv("NOTES", good())[1]), Expect(reason="ISMN pattern"))  # a name without variable
    # CEOP: a truncated last line; combined layout with its soil temperature.
    ceop = "\n".join(ceop_line(s.split("   ")[0], "0.2000") for s in good())
    ceop_name = "CEOP/Narbonne/SMOSMANIA_SMOSMANIA_Narbonne_sm_0.050000_0.050000_Theta_20200101_20200306.stm"
    add(
        (ceop_name, (ceop + "\n" + ceop_line("2020/03/06 00:00", "0.2000")[:60]).encode()),
        Expect(1, {n: "fields, expected 15"}),
    )
    add(("CEOP/Narbonne/SMOSMANIA_SMOSMANIA_Narbonne_20101021_20101022.stm", combined_file()), Expect(0, {}))
    # Tables: not USCRN; not parquet at all.
    buf = io.BytesIO()
    pd.DataFrame({"a": [1, 2]}).to_parquet(buf)
    add(("tables/other.parquet", buf.getvalue()), Expect(reason="not a USCRN daily table"))
    add(("tables/fake.parquet", b"wban,lst_date\n1,2020-01-01\n"), Expect(file_line=1, reason="no reader"))
    # Archives: a corrupt member next to a good one; an archive that is not one.
    members = dict([good_stm("ZIPGOOD"), good_stm("ZIPBAD")])
    corrupt = corrupt_member(zip_bytes(members), good_stm("ZIPBAD")[0])
    corpus["archives/stations.zip"] = (corrupt, Expect(1, {}))
    corpus["archives/stations.zip/" + good_stm("ZIPBAD")[0]] = (b"", Expect(reason="cannot read file"))
    corpus["archives/truncated.zip"] = (zip_bytes(members)[:200], Expect(reason="not a readable zip archive"))
    # Metadata that does not parse: reported, data still read.
    corpus["NET/GOOD1/NET_NET_GOOD1_static_variables.csv"] = (
        b"clay fraction;% weight;0.00;0.30;x;;HWSD\r\n",
        Expect(lines={1: "'clay fraction'"}),
    )
    corpus["Metadata.xml"] = (
        b"<?xml version='1.0'?><MD_Metadata><title>",
        Expect(file_line=1, reason="XML does not parse"),
    )
    return corpus


def write_corpus(root: Path) -> dict[str, tuple[bytes, Expect]]:
    corpus = build_corpus()
    for rel, (data, _) in corpus.items():
        if rel.startswith("archives/stations.zip/"):
            continue  # a member, written with its archive
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return corpus


def test_corpus_is_read_or_rejected_by_rule_and_good_files_kept(tmp_path: Path) -> None:
    cfg = run_config(str(tmp_path), min_days=60)
    corpus = write_corpus(Path(cfg.store("ismn")))
    out = ingest(cfg, Context(show_progress=False))

    report = stores.read_json(out["insitu_quarantine"])
    by_file: dict[str, list[dict[str, object]]] = {}
    for r in report:
        by_file.setdefault(str(r["file"]), []).append(r)
    ds = stores.open_zarr(out["insitu"], chunks=None)
    kept = pd.Series(ds.source_file.values.tolist()).value_counts().to_dict()

    for rel, (_, expect) in corpus.items():
        got = by_file.pop(rel, [])
        if expect.reason:  # rejected as a whole
            assert len(got) == 1, (rel, got)
            assert got[0]["line"] == expect.file_line, (rel, got)
            assert expect.reason in str(got[0]["reason"]), (rel, got)
            assert rel not in kept
        else:
            assert {r["line"]: r["reason"] for r in got}.keys() == (expect.lines or {}).keys(), (rel, got)
            for r in got:
                assert (expect.lines or {})[r["line"]] in str(r["reason"]), (rel, r)
            member = f"{rel}/{good_stm('ZIPGOOD')[0]}" if rel.endswith(".zip") else rel
            assert kept.get(member, 0) == expect.series, (rel, kept.get(member))
    assert by_file == {}  # nothing reported that the corpus does not expect
    assert sum(kept.values()) == ds.sizes["series"]
    # The good values survive exactly: every kept series of this corpus is 0.3 or 0.25 every day.
    sm = ds.soil_moisture.values
    assert np.nanmax(np.abs(sm - np.round(sm * 20) / 20)) < 1e-6
    stations = ds.station.values.tolist()
    assert "Gr\xfcn#3(a),b" in stations and ds.sizes["time"] == DAYS
    np.testing.assert_allclose(sm[stations.index("GOOD2")], 0.25, rtol=1e-6)
    impossible = stations.index("IMPOSSIBLE")  # -0.5 and 1.5 were dropped by QC, not reported
    assert np.isfinite(sm[impossible]).sum() == DAYS


def test_process_batch_never_raises_on_the_corpus(tmp_path: Path) -> None:
    root = tmp_path / "ismn"
    write_corpus(root)
    inv = inventory(str(root))
    results = process_batch(inv.data, IngestConfig())
    assert len(results) == len(inv.data) > 30
    assert all(r.layout is not None or r.rejected or r.skipped for r in results)


@pytest.mark.parametrize("cut", [10, 100, 1000])
def test_truncated_files_never_crash(tmp_path: Path, cut: int) -> None:
    """A file cut anywhere (partial download) is read up to the cut or rejected, never a crash."""
    for i, (rel, (data, _)) in enumerate(build_corpus().items()):
        if rel.startswith("archives/stations.zip/"):
            continue
        path = tmp_path / str(i) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data[:cut])
    results = process_batch(inventory(str(tmp_path)).data, IngestConfig(min_days=1))
    assert all(r.layout is not None or r.rejected or r.skipped for r in results)
    assert not any("unexpected error" in rej.reason for r in results for rej in r.rejected)


def test_a_zip_member_cut_in_the_middle(tmp_path: Path) -> None:
    data = zip_bytes(dict([good_stm("A"), good_stm("B")]), method=zipfile.ZIP_STORED)
    (tmp_path / "a.zip").write_bytes(data[: len(data) - 300])  # the central directory is gone
    results = process_batch(inventory(str(tmp_path)).data, IngestConfig())
    assert results == []
    assert "not a readable zip archive" in inventory(str(tmp_path)).rejected[0].reason
