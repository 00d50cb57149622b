"""In-situ soil moisture: readers of station files, quality control and the `ingest` step.

`ingest(cfg, ctx)` is the step entry; `readers` holds the `InSituReader` protocol, the reader registry
and the ISMN header+values reader; `qc` the quality control and daily aggregation.
"""

from somocloud.insitu.ingest import FileResult, ingest, process_file, quarantine_url
from somocloud.insitu.qc import DailySeries, QCCounts, daily_means, flag_mask, qc_daily, valid_values
from somocloud.insitu.readers import (
    READERS,
    HeaderValuesReader,
    InSituFileError,
    InSituReader,
    Rejection,
    SensorSeries,
    reader_for,
    register_reader,
)

__all__ = [
    "READERS",
    "DailySeries",
    "FileResult",
    "HeaderValuesReader",
    "InSituFileError",
    "InSituReader",
    "QCCounts",
    "Rejection",
    "SensorSeries",
    "daily_means",
    "flag_mask",
    "ingest",
    "process_file",
    "qc_daily",
    "quarantine_url",
    "reader_for",
    "register_reader",
    "valid_values",
]
