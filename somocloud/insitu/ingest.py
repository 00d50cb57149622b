"""The `ingest` step: in-situ station files → the `insitu` Zarr (series × time) of daily,
quality-controlled soil moisture, plus the quarantine report `<insitu>.quarantine.json`.

The `ismn` store may be a folder (searched recursively, zip archives inside it included), one zip
archive, or one file (`archive` module); each data file goes to the reader that recognises its layout
(`readers.reader_for`). Files whose ISMN name says they hold another variable (`_ts_`, `_p_`, ...)
are skipped without being read. Rules for bad input (each lands in the quarantine report with file,
line and reason; the run never stops on a bad file and fails only when no usable series is left):

* whole file rejected: unreadable (I/O error, corrupt zip member), empty, binary, no reader knows the
  layout, the reader rejects it (bad header, bad file name, no valid record), or more than
  `ingest.max_bad_line_fraction` of its record lines are bad (then its good lines are suspect too);
* single line rejected, rest kept: see the reader modules (`ismn_stm` lists the rules);
* an unknown quality flag: one entry per flag and file; its values are not valid (`qc`);
* a static-variables CSV row that does not parse: that row is reported, the station keeps its data;
* an archive that cannot be opened, a `Metadata.xml` that does not parse: reported, the rest is read;
* the same series twice (identical network, station, sensor, depths and daily values, e.g. a station
  both unpacked and inside a zip): the first by file name is kept, the other reported.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from somocloud import provenance, stores
from somocloud.config import IngestConfig, RunConfig
from somocloud.context import Context
from somocloud.insitu.archive import (
    MEMBER_ERRORS,
    ArchiveCache,
    Inventory,
    SourceFile,
    describe_error,
    inventory,
    read_source,
)
from somocloud.insitu.metadata import StationStatics, parse_metadata_xml, parse_static_variables
from somocloud.insitu.model import STATIC_FLOAT_FIELDS, STATIC_STR_FIELDS, InSituFileError, Rejection
from somocloud.insitu.qc import DailySeries, QCCounts, flag_codes, qc_daily, unknown_flags
from somocloud.insitu.readers import HEAD_BYTES, looks_binary, parse_ismn_name, reader_for

log = logging.getLogger(__name__)

SERIES_CHUNK = 256
"""Series per Zarr chunk of `soil_moisture` (time is one chunk)."""
SOIL_MOISTURE = "sm"
STATIC_ATTRS: dict[str, dict[str, str]] = {
    "clay": {"units": "1", "long_name": "clay fraction at the sensor depth"},
    "sand": {"units": "1", "long_name": "sand fraction at the sensor depth"},
    "silt": {"units": "1", "long_name": "silt fraction at the sensor depth"},
    "organic_carbon": {"units": "1", "long_name": "organic carbon fraction at the sensor depth"},
    "saturation": {"units": "m3 m-3", "long_name": "saturated water content at the sensor depth"},
    "land_cover": {"long_name": "ESA CCI land cover class code"},
    "climate_class": {"long_name": "Koeppen-Geiger 2007 climate class"},
}
"""Attributes of the site-property coordinates of the `insitu` store."""


@dataclass
class FileResult:
    """What reading and QC made of one file (small: daily values only, so it travels from workers).

    Attributes:
        file: The file, relative to the `ismn` store.
        series: Daily soil moisture series after QC (kept or not), with their metadata.
        rejected: Quarantine entries: the whole file, or single lines.
        skipped: Why a file was passed over without being an error (another variable), else None.
        layout: The reader that read the file; None if it was not read.
        bad_lines: Record lines (or rows) dropped while reading.
    """

    file: str
    series: list[DailySeries] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    skipped: str | None = None
    layout: str | None = None
    bad_lines: int = 0


def quarantine_url(insitu_url: str) -> str:
    """Where the quarantine report of an `insitu` store lives."""
    return insitu_url.rstrip("/") + ".quarantine.json"


StaticsCache = dict[str, tuple[StationStatics, list[Rejection]]]


def _statics(
    src: SourceFile, archives: ArchiveCache, cache: StaticsCache
) -> tuple[StationStatics, list[Rejection]]:
    """The station's static variables; their report entries only on the first use in a batch."""
    if src.static is None:
        return StationStatics(), []
    key = src.static.name
    if key in cache:
        return cache[key][0], []
    try:
        parsed = parse_static_variables(key, read_source(src.static, archives))
    except MEMBER_ERRORS as exc:
        parsed = (StationStatics(), [Rejection(key, None, describe_error(exc))])
    cache[key] = parsed
    return parsed


def _reject(name: str, line: int | None, reason: str) -> FileResult:
    return FileResult(name, rejected=[Rejection(name, line, reason)])


def _too_many_bad(
    name: str, rejected: list[Rejection], n_records: int, cfg: IngestConfig
) -> FileResult | None:
    bad = {r.line for r in rejected if r.line is not None}
    if n_records == 0 or len(bad) <= cfg.max_bad_line_fraction * n_records:
        return None
    first = min(rejected, key=lambda r: r.line or 0)
    reason = (
        f"{len(bad)} of {n_records} record lines are bad (more than {cfg.max_bad_line_fraction:.0%}); "
        f"first, line {first.line}: {first.reason}"
    )
    return _reject(name, None, reason)


def process_source(
    src: SourceFile,
    cfg: IngestConfig,
    archives: ArchiveCache | None = None,
    statics: StaticsCache | None = None,
) -> FileResult:
    """Read, QC and aggregate one data file; never raises for a bad file (it is quarantined)."""
    name = src.name
    parsed = parse_ismn_name(name)
    if parsed is not None and parsed.variable != SOIL_MOISTURE:
        return FileResult(name, skipped=f"variable {parsed.variable!r} is not soil moisture")
    if archives is None:
        with ArchiveCache() as cache:
            return process_source(src, cfg, cache, statics)
    try:
        data = read_source(src, archives)
    except MEMBER_ERRORS as exc:
        return _reject(name, None, describe_error(exc))
    if not data.strip():
        return _reject(name, None, "empty file")
    head = data[:HEAD_BYTES]
    reader = reader_for(name, head)
    if reader is None:
        if looks_binary(head):
            return _reject(name, None, "binary content, not a station file")
        return _reject(name, 1, "no reader recognises the layout (ISMN header+values, CEOP, USCRN table)")
    try:
        content = reader.read(name, data)
    except InSituFileError as exc:
        return FileResult(name, rejected=[exc.rejection()])
    except Exception as exc:  # a reader bug must not stop the run; the file is reported instead
        return _reject(name, None, f"unexpected error in reader {reader.name}: {type(exc).__name__}: {exc}")
    whole = _too_many_bad(name, content.rejected, content.n_records, cfg)
    if whole is not None:
        return whole
    site, site_rejected = _statics(src, archives, statics if statics is not None else {})
    bad_lines = len({r.line for r in content.rejected if r.line is not None})
    result = FileResult(name, [], [*content.rejected, *site_rejected], None, reader.name, bad_lines)
    for s in content.series:
        if s.meta.variable != SOIL_MOISTURE:
            continue
        meta = replace(s.meta, static=site.for_depth(s.meta.depth_from, s.meta.depth_to))
        codes = flag_codes(s) if s.has_flags else None  # factorised once for both
        result.series.append(qc_daily(s, cfg, meta, codes))
        result.rejected += unknown_flags(s, cfg.quality_flags, codes)
    if not result.series:
        result.skipped = "no soil moisture series in the file"
    return result


def process_file(url: str, name: str, cfg: IngestConfig) -> FileResult:
    """`process_source` for one plain file at `url`, named `name` in reports."""
    return process_source(SourceFile(url, name), cfg)


def process_batch(
    items: list[SourceFile], cfg: IngestConfig, options: dict[str, dict[str, Any]] | None = None
) -> list[FileResult]:
    """`process_source` over many files, each archive opened once; runs on a Dask worker with the
    run-time storage options."""
    if options:
        stores.set_runtime_options(options)
    statics: StaticsCache = {}
    with ArchiveCache() as archives:
        return [process_source(src, cfg, archives, statics) for src in items]


def read_daily_series(url: str, cfg: IngestConfig | None = None) -> list[DailySeries]:
    """Daily QC'd soil moisture series of one data file, zip archive or folder (any store URL).

    Strict, for callers outside the step (benchmarks, notebooks): the first file-level problem raises
    `InSituFileError` (the step quarantines it instead); bad single lines are dropped as in the step.
    Series below `min_days` are returned too (`DailySeries.kept` is False).
    """
    cfg = cfg or IngestConfig()
    inv = inventory(url)
    results = process_batch(inv.data, cfg)
    problems = inv.rejected + [rej for r in results if r.layout is None for rej in r.rejected]
    if problems:
        first = problems[0]
        raise InSituFileError(first.file, first.line, first.reason)
    return [s for r in results for s in r.series]


def read_all(cfg: RunConfig, ctx: Context, files: list[SourceFile]) -> list[FileResult]:
    """Process every file: in-process for few files, on the Dask cluster in batches for many."""
    icfg = cfg.ingest
    if len(files) <= icfg.parallel_min_files:
        return process_batch(files, icfg)
    from somocloud.progress import track

    client = ctx.dask(cfg.cluster)
    options = stores.runtime_options()
    # Consecutive files share archives and station folders (the inventory is sorted by name).
    batches = [files[i : i + icfg.files_per_task] for i in range(0, len(files), icfg.files_per_task)]
    futures = [client.submit(process_batch, batch, icfg, options, pure=False) for batch in batches]
    done = track(futures, "ingest", show=ctx.show_progress)
    return [result for batch in done for result in batch]


def _series_order(d: DailySeries) -> tuple[Any, ...]:
    m = d.meta
    return (m.network, m.station, m.depth_from, m.depth_to, m.sensor, m.source_file)


def drop_duplicates(series: list[DailySeries]) -> tuple[list[DailySeries], list[Rejection]]:
    """Keep one of each set of identical series (same metadata key and daily values), first by order."""
    kept: list[DailySeries] = []
    seen: dict[tuple[Any, ...], list[DailySeries]] = {}
    rejected = []
    for d in sorted(series, key=_series_order):
        m = d.meta
        key = (m.network, m.station, m.sensor, m.depth_from, m.depth_to, m.lat, m.lon)
        twin = next((k for k in seen.get(key, []) if k.daily.equals(d.daily)), None)
        if twin is not None:
            reason = f"same series as {twin.meta.source_file} (same station, sensor, depth and daily values); kept that one"
            rejected.append(Rejection(m.source_file, None, reason))
            continue
        seen.setdefault(key, []).append(d)
        kept.append(d)
    return kept, rejected


def build_dataset(kept: list[DailySeries]) -> xr.Dataset:
    """Daily series → the `insitu` dataset (series × time), in the given order."""
    t0 = min(d.daily.index[0] for d in kept)
    t1 = max(d.daily.index[-1] for d in kept)
    time = pd.date_range(t0, t1, freq="D").values.astype("datetime64[ns]")
    data = np.full((len(kept), time.size), np.nan, dtype="float32")
    one_day = np.timedelta64(1, "D")
    for i, d in enumerate(kept):
        pos = ((d.daily.index.values - time[0]) // one_day).astype(int)
        data[i, pos] = d.daily.to_numpy("float32")

    def meta(key: str, dtype: str) -> np.ndarray:
        return np.array([getattr(d.meta, key) for d in kept], dtype=dtype)

    def static(key: str, dtype: str) -> np.ndarray:
        return np.array([getattr(d.meta.static, key) for d in kept], dtype=dtype)

    coords: dict[str, Any] = {"series": ("series", np.arange(len(kept))), "time": ("time", time)}
    for key in ("network", "station", "sensor", "source_file"):
        # object → Zarr 3 variable-length UTF-8 `string` (reads back as numpy StringDType).
        coords[key] = ("series", meta(key, "object"))
    for key, units in (("lat", "degrees_north"), ("lon", "degrees_east"), ("elevation", "m")):
        coords[key] = ("series", meta(key, "float64"), {"units": units})
    for key in ("depth_from", "depth_to"):
        coords[key] = ("series", meta(key, "float64"), {"units": "m", "positive": "down"})
    for key in STATIC_FLOAT_FIELDS:
        coords[key] = ("series", static(key, "float64"), dict(STATIC_ATTRS[key]))
    for key in STATIC_STR_FIELDS:
        coords[key] = ("series", static(key, "object"), dict(STATIC_ATTRS[key]))
    sm = xr.Variable(
        ("series", "time"),
        data,
        {"units": "m3 m-3", "long_name": "daily mean in-situ volumetric soil moisture (quality-controlled)"},
    )
    return xr.Dataset({"soil_moisture": sm}, coords=coords)


def _summary(results: list[FileResult], n_kept: int, n_dups: int, min_days: int) -> str:
    read = [r for r in results if r.layout is not None]
    n_bad_files = sum(r.layout is None and bool(r.rejected) for r in results)
    n_bad_lines = sum(r.bad_lines for r in read)
    n_skipped = sum(r.skipped is not None and r.layout is None for r in results)
    counts = [d.counts for r in read for d in r.series]
    total = QCCounts(
        total=sum(c.total for c in counts),
        bad_flag=sum(c.bad_flag for c in counts),
        missing=sum(c.missing for c in counts),
        out_of_range=sum(c.out_of_range for c in counts),
    )
    n_series = len(counts)
    n_short = sum(not d.kept for r in read for d in r.series)
    return (
        f"{len(results)} files: {len(read)} read, {n_bad_files} quarantined, {n_skipped} other variables; "
        f"{n_bad_lines} bad lines dropped; values {total.valid}/{total.total} valid "
        f"({total.bad_flag} flagged, {total.missing} missing, {total.out_of_range} out of range); "
        f"{n_series} series: {n_kept} kept, {n_short} dropped (< {min_days} days), {n_dups} duplicates"
    )


def _datasets(inv: Inventory) -> tuple[list[dict[str, object]], list[Rejection]]:
    out, rejected = [], []
    with ArchiveCache() as archives:
        for src in inv.datasets:
            try:
                out.append(parse_metadata_xml(src.name, read_source(src, archives)).as_dict())
            except InSituFileError as exc:
                rejected.append(exc.rejection())
            except MEMBER_ERRORS as exc:
                rejected.append(Rejection(src.name, None, describe_error(exc)))
    return out, rejected


def ingest(cfg: RunConfig, ctx: Context) -> dict[str, str]:
    """The `ingest` step: in-situ files → `insitu` Zarr and its quarantine report.

    Returns:
        {"insitu": Zarr URL, "insitu_quarantine": report URL}.

    Raises:
        FileNotFoundError: no data file (and nothing quarantined) under the `ismn` store.
        ValueError: no series survived (the quarantine report is written first).
    """
    ismn_url = cfg.store("ismn")
    out_url = cfg.store("insitu")
    q_url = quarantine_url(out_url)
    if ctx.parts is not None:
        log.warning("ingest writes one store and ignores --parts; reading every file")
    inv = inventory(ismn_url) if stores.exists(ismn_url) else Inventory()
    if not inv.data and not inv.rejected:
        raise FileNotFoundError(
            f"no in-situ data files (*.stm, *.parquet, also inside *.zip) under store ismn={ismn_url}"
        )

    results = read_all(cfg, ctx, inv.data)
    datasets, dataset_rejected = _datasets(inv)
    series = [d for r in results for d in r.series if d.kept]
    kept, duplicates = drop_duplicates(series)
    report = inv.rejected + dataset_rejected + duplicates + [rej for r in results for rej in r.rejected]
    # A station's static-variables rows may be reported by each batch that used them: once is enough.
    report = sorted(dict.fromkeys(report), key=lambda rej: (rej.file, rej.line or 0))
    summary = _summary(results, len(kept), len(duplicates), cfg.ingest.min_days)
    stores.write_json(q_url, [rej.as_dict() for rej in report])
    if not kept:
        raise ValueError(
            f"ingest: no usable in-situ series in store ismn={ismn_url} ({summary}); see {q_url}"
        )

    ds = build_dataset(kept)
    ds.attrs.update(provenance.provenance_attrs(cfg, "ingest", {"ismn": ismn_url}))
    ds.attrs["quality_flags"] = list(cfg.ingest.quality_flags)
    ds.attrs["layouts"] = dict(sorted(Counter(r.layout for r in results if r.layout).items()))
    ds.attrs["source_datasets"] = datasets
    chunks = (min(ds.sizes["series"], SERIES_CHUNK), ds.sizes["time"])
    stores.write_zarr(ds, out_url, encoding={"soil_moisture": {"chunks": chunks}})
    log.info("ingest: %s; quarantine report %s", summary, q_url)
    return {"insitu": out_url, "insitu_quarantine": q_url}
