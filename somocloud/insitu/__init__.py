"""In-situ soil moisture: readers of station files, quality control and the `ingest` step.

`ingest(cfg, ctx)` is the step entry; `read_daily_series(url, cfg)` reads one file, archive or folder
into QC'd daily series outside the step. `readers` holds the `InSituReader` protocol and registry;
the readers are `ismn_stm` (ISMN header+values), `ismn_ceop` (CEOP-separate and old combined CEOP)
and `uscrn` (USCRN daily table), built on the vectorised tokenizer in `tokens`. `archive` lists a
store (folders, zip archives read in place), `metadata` parses `*_static_variables.csv` and
`Metadata.xml`, `qc` does quality control and daily means.
"""

from somocloud.insitu import ismn_ceop, ismn_stm, uscrn  # noqa: F401  (registers the readers, in this order)
from somocloud.insitu.archive import Inventory, SourceFile, inventory, read_source
from somocloud.insitu.ingest import (
    FileResult,
    build_dataset,
    ingest,
    process_batch,
    process_file,
    process_source,
    quarantine_url,
    read_daily_series,
)
from somocloud.insitu.ismn_ceop import CeopCombinedReader, CeopSeparateReader
from somocloud.insitu.ismn_stm import HeaderValuesReader
from somocloud.insitu.metadata import (
    DatasetMeta,
    StationStatics,
    parse_metadata_xml,
    parse_static_variables,
)
from somocloud.insitu.model import (
    FileContent,
    InSituFileError,
    Rejection,
    SensorMeta,
    SensorSeries,
    StaticMeta,
)
from somocloud.insitu.qc import DailySeries, QCCounts, daily_means, flag_mask, qc_daily, valid_values
from somocloud.insitu.readers import READERS, InSituReader, reader_for, register_reader
from somocloud.insitu.uscrn import UscrnDailyReader

__all__ = [
    "READERS",
    "CeopCombinedReader",
    "CeopSeparateReader",
    "DailySeries",
    "DatasetMeta",
    "FileContent",
    "FileResult",
    "HeaderValuesReader",
    "InSituFileError",
    "InSituReader",
    "Inventory",
    "QCCounts",
    "Rejection",
    "SensorMeta",
    "SensorSeries",
    "SourceFile",
    "StaticMeta",
    "StationStatics",
    "UscrnDailyReader",
    "build_dataset",
    "daily_means",
    "flag_mask",
    "ingest",
    "inventory",
    "parse_metadata_xml",
    "parse_static_variables",
    "process_batch",
    "process_file",
    "process_source",
    "qc_daily",
    "quarantine_url",
    "read_daily_series",
    "read_source",
    "reader_for",
    "register_reader",
    "valid_values",
]
