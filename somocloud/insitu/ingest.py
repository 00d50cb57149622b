"""The `ingest` step: a folder of ISMN station files → the `insitu` Zarr (series × time) of daily,
quality-controlled soil moisture, plus the quarantine report `<insitu>.quarantine.json`.

Every `.stm` file under the `ismn` store is considered. Files whose ISMN name says they hold another
variable (`_ts_`, `_p_`, ...) are skipped silently. A file that cannot be used (unknown layout, binary,
empty, bad header, no valid record, a name that does not say which variable it holds) is listed in the
quarantine report and skipped; a bad record line is listed and only that line dropped. The run never
stops on a bad file: it fails only when no usable series is left at all.
"""

from __future__ import annotations

import logging
import posixpath
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from somocloud import provenance, stores
from somocloud.config import IngestConfig, RunConfig
from somocloud.context import Context
from somocloud.insitu.qc import DailySeries, QCCounts, qc_daily
from somocloud.insitu.readers import (
    HEAD_BYTES,
    InSituFileError,
    Rejection,
    SensorSeries,
    looks_binary,
    reader_for,
    variable_from_name,
)

log = logging.getLogger(__name__)

SERIES_CHUNK = 256
"""Series per Zarr chunk of `soil_moisture` (time is one chunk)."""


@dataclass
class FileResult:
    """What reading and QC made of one file (small: daily values only, so it travels from workers).

    Attributes:
        file: The file, relative to the `ismn` store.
        series: Station and sensor metadata (None when the file was rejected or skipped).
        daily: Daily means after QC (None when the file was rejected or skipped).
        rejected: Quarantine entries: the whole file, or single record lines.
        skipped: Why a file was passed over without being an error (another variable), else None.
    """

    file: str
    series: dict[str, Any] | None = None
    daily: DailySeries | None = None
    rejected: list[Rejection] = field(default_factory=list)
    skipped: str | None = None


def quarantine_url(insitu_url: str) -> str:
    """Where the quarantine report of an `insitu` store lives."""
    return insitu_url.rstrip("/") + ".quarantine.json"


def process_file(url: str, name: str, cfg: IngestConfig) -> FileResult:
    """Read, QC and aggregate one station file; never raises for a bad file (it is quarantined)."""
    variable = variable_from_name(url)
    if variable is None:
        reason = (
            "file name does not follow the ISMN pattern "
            "CSE_NETWORK_STATION_VAR_FROM_TO_SENSOR_START_END.stm, so its variable is unknown"
        )
        return FileResult(name, rejected=[Rejection(name, None, reason)])
    if variable != "sm":
        return FileResult(name, skipped=f"variable {variable!r} is not soil moisture")
    try:
        data = stores.read_bytes(url)
    except OSError as exc:
        return FileResult(name, rejected=[Rejection(name, None, f"cannot read file: {type(exc).__name__}")])
    if not data.strip():
        return FileResult(name, rejected=[Rejection(name, None, "empty file")])
    head = data[:HEAD_BYTES]
    reader = reader_for(url, head)
    if reader is None:
        if looks_binary(head):
            return FileResult(name, rejected=[Rejection(name, None, "binary content, not a station file")])
        reason = "no reader recognises the layout (the first line is not an ISMN header+values header)"
        return FileResult(name, rejected=[Rejection(name, 1, reason)])
    try:
        series = reader.read(url, data, name)
    except InSituFileError as exc:
        return FileResult(name, rejected=[exc.rejection()])
    except Exception as exc:  # a reader bug must not stop the run; the file is reported instead
        reason = f"unexpected error in reader {reader.name}: {type(exc).__name__}: {exc}"
        return FileResult(name, rejected=[Rejection(name, None, reason)])
    return FileResult(name, series=_metadata(series), daily=qc_daily(series, cfg), rejected=series.rejected)


def _metadata(s: SensorSeries) -> dict[str, Any]:
    return {
        "network": s.network,
        "station": s.station,
        "sensor": s.sensor,
        "source_file": s.source_file,
        "lat": s.lat,
        "lon": s.lon,
        "depth_from": s.depth_from,
        "depth_to": s.depth_to,
    }


def process_batch(
    items: list[tuple[str, str]], cfg: IngestConfig, options: dict[str, dict[str, Any]]
) -> list[FileResult]:
    """`process_file` over (url, name) pairs; runs on a Dask worker with the run-time storage options."""
    if options:
        stores.set_runtime_options(options)
    return [process_file(url, name, cfg) for url, name in items]


def list_station_files(ismn_url: str) -> list[tuple[str, str]]:
    """(url, path relative to the store) of every `.stm` file under `ismn_url`, sorted."""
    _, root = stores.filesystem(ismn_url)
    out = []
    for url in stores.list_files(ismn_url, ".stm"):
        _, path = stores.filesystem(url)
        out.append((url, posixpath.relpath(path, root)))
    return out


def read_all(cfg: RunConfig, ctx: Context, files: list[tuple[str, str]]) -> list[FileResult]:
    """Process every file: in-process for few files, on the Dask cluster in batches for many."""
    icfg = cfg.ingest
    if len(files) <= icfg.parallel_min_files:
        return [process_file(url, name, icfg) for url, name in files]
    from somocloud.progress import track

    client = ctx.dask(cfg.cluster)
    options = stores.runtime_options()
    batches = [files[i : i + icfg.files_per_task] for i in range(0, len(files), icfg.files_per_task)]
    futures = [client.submit(process_batch, batch, icfg, options, pure=False) for batch in batches]
    done = track(futures, "ingest", show=ctx.show_progress)
    return [result for batch in done for result in batch]


def _meta(r: FileResult) -> dict[str, Any]:
    if r.series is None:
        raise ValueError(f"{r.file}: no series metadata")
    return r.series


def _daily(r: FileResult) -> pd.Series:
    if r.daily is None:
        raise ValueError(f"{r.file}: no daily series")
    return r.daily.daily


def _series_order(r: FileResult) -> tuple[Any, ...]:
    m = _meta(r)
    return (m["network"], m["station"], m["depth_from"], m["depth_to"], m["sensor"], r.file)


def build_dataset(kept: list[FileResult]) -> xr.Dataset:
    """Daily series → the `insitu` dataset (series × time), series in a stable order."""
    kept = sorted(kept, key=_series_order)
    dailies = [_daily(r) for r in kept]
    t0 = min(d.index[0] for d in dailies)
    t1 = max(d.index[-1] for d in dailies)
    time = pd.date_range(t0, t1, freq="D").values.astype("datetime64[ns]")
    data = np.full((len(dailies), time.size), np.nan, dtype="float32")
    one_day = np.timedelta64(1, "D")
    for i, d in enumerate(dailies):
        pos = ((d.index.values - time[0]) // one_day).astype(int)
        data[i, pos] = d.to_numpy("float32")

    def meta(key: str, dtype: str) -> np.ndarray:
        return np.array([_meta(r)[key] for r in kept], dtype=dtype)

    coords: dict[str, Any] = {
        "series": ("series", np.arange(len(kept))),
        "time": ("time", time),
    }
    for key in ("network", "station", "sensor", "source_file"):
        # object → Zarr 3 variable-length UTF-8 `string` (reads back as numpy StringDType).
        coords[key] = ("series", meta(key, "object"))
    for key, units in (("lat", "degrees_north"), ("lon", "degrees_east")):
        coords[key] = ("series", meta(key, "float64"), {"units": units})
    for key in ("depth_from", "depth_to"):
        coords[key] = ("series", meta(key, "float64"), {"units": "m", "positive": "down"})
    sm = xr.Variable(
        ("series", "time"),
        data,
        {
            "units": "m3 m-3",
            "long_name": "daily mean in-situ volumetric soil moisture (quality-controlled)",
        },
    )
    return xr.Dataset({"soil_moisture": sm}, coords=coords)


def _summary(results: list[FileResult], n_kept: int, min_days: int) -> str:
    n_read = sum(r.series is not None for r in results)
    n_bad_files = sum(r.series is None and bool(r.rejected) for r in results)
    n_bad_lines = sum(len(r.rejected) for r in results if r.series is not None)
    n_skipped = sum(r.skipped is not None for r in results)
    counts = [r.daily.counts for r in results if r.daily is not None]
    total = QCCounts(
        total=sum(c.total for c in counts),
        bad_flag=sum(c.bad_flag for c in counts),
        missing=sum(c.missing for c in counts),
        out_of_range=sum(c.out_of_range for c in counts),
    )
    return (
        f"{len(results)} files: {n_read} read, {n_bad_files} quarantined, {n_skipped} other variables; "
        f"{n_bad_lines} bad lines dropped; values {total.valid}/{total.total} valid "
        f"({total.bad_flag} flagged, {total.missing} missing, {total.out_of_range} out of range); "
        f"{n_kept} series kept, {n_read - n_kept} dropped (< {min_days} days)"
    )


def ingest(cfg: RunConfig, ctx: Context) -> dict[str, str]:
    """The `ingest` step: ISMN files → `insitu` Zarr and its quarantine report.

    Returns:
        {"insitu": Zarr URL, "insitu_quarantine": report URL}.

    Raises:
        FileNotFoundError: no `.stm` file under the `ismn` store.
        ValueError: no series survived (the quarantine report is written first).
    """
    ismn_url = cfg.store("ismn")
    out_url = cfg.store("insitu")
    q_url = quarantine_url(out_url)
    if ctx.parts is not None:
        log.warning("ingest writes one store and ignores --parts; reading every file")
    files = list_station_files(ismn_url)
    if not files:
        raise FileNotFoundError(f"no ISMN station files (*.stm) under store ismn={ismn_url}")

    results = read_all(cfg, ctx, files)
    report = sorted((rej for r in results for rej in r.rejected), key=lambda rej: (rej.file, rej.line or 0))
    kept = [r for r in results if r.daily is not None and r.daily.kept]
    summary = _summary(results, len(kept), cfg.ingest.min_days)
    stores.write_json(q_url, [rej.as_dict() for rej in report])
    if not kept:
        raise ValueError(
            f"ingest: no usable in-situ series in store ismn={ismn_url} ({summary}); see {q_url}"
        )

    ds = build_dataset(kept)
    ds.attrs.update(provenance.provenance_attrs(cfg, "ingest", {"ismn": ismn_url}))
    ds.attrs["quality_flags"] = list(cfg.ingest.quality_flags)
    chunks = (min(ds.sizes["series"], SERIES_CHUNK), ds.sizes["time"])
    stores.write_zarr(ds, out_url, encoding={"soil_moisture": {"chunks": chunks}})
    log.info("ingest: %s; quarantine report %s", summary, q_url)
    return {"insitu": out_url, "insitu_quarantine": q_url}
