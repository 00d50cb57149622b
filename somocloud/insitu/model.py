"""Data types shared by the in-situ readers, metadata parsers, quality control and the `ingest` step."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Rejection:
    """One rejected file or line, as written to the quarantine report.

    Attributes:
        file: The file, relative to the store being ingested (members of a zip archive as
            `<archive>.zip/<member>`), or its URL when read alone.
        line: 1-based line number (rows of a table; see `tokens` for how line breaks count); None
            for a whole-file reason.
        reason: What is wrong, naming the field and the offending text.
    """

    file: str
    line: int | None
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "reason": self.reason}


class InSituFileError(ValueError):
    """A station file that cannot be used at all (bad header, no valid records, unknown layout)."""

    def __init__(self, file: str, line: int | None, reason: str) -> None:
        where = f"{file}, line {line}" if line is not None else file
        super().__init__(f"{where}: {reason}")
        self.file = file
        self.line = line
        self.reason = reason

    def rejection(self) -> Rejection:
        return Rejection(self.file, self.line, self.reason)


@dataclass(frozen=True)
class StaticMeta:
    """Site properties from a station's `*_static_variables.csv`, for the sensor's depth.

    Attributes:
        clay: Clay fraction (0-1; ISMN gives % weight).
        sand: Sand fraction (0-1).
        silt: Silt fraction (0-1).
        organic_carbon: Organic carbon fraction (0-1; ISMN gives % weight).
        saturation: Saturated water content (m3 m-3).
        land_cover: ESA CCI land cover class code (2010, else 2005, else 2000); NaN if unknown.
        climate_class: Koeppen-Geiger (2007) climate class such as `Cfa`; "" if unknown.
    """

    clay: float = math.nan
    sand: float = math.nan
    silt: float = math.nan
    organic_carbon: float = math.nan
    saturation: float = math.nan
    land_cover: float = math.nan
    climate_class: str = ""


STATIC_FLOAT_FIELDS = ("clay", "sand", "silt", "organic_carbon", "saturation", "land_cover")
"""`StaticMeta` fields stored as float64 per-series coordinates of the `insitu` store."""
STATIC_STR_FIELDS = ("climate_class",)
"""`StaticMeta` fields stored as string per-series coordinates of the `insitu` store."""


@dataclass(frozen=True)
class SensorMeta:
    """Who measured what where: the metadata of one sensor series.

    Attributes:
        network: Network name (as in the file's header or records).
        station: Station name (as in the file; may contain `#`, `(`, `)`, `,` and `_`).
        sensor: Sensor name (may contain spaces).
        variable: Variable code (`sm` soil moisture, `ts` soil temperature, ...).
        source_file: The file the series came from (relative to the store).
        lat: Latitude in degrees north.
        lon: Longitude in degrees east, in [-180, 180).
        elevation: Station elevation in m (NaN where the source does not give it).
        depth_from: Upper end of the measured depth range in m (positive down).
        depth_to: Lower end of the measured depth range in m.
        static: Site properties for this depth (NaN/"" where unknown).
    """

    network: str
    station: str
    sensor: str
    variable: str
    source_file: str
    lat: float
    lon: float
    elevation: float
    depth_from: float
    depth_to: float
    static: StaticMeta = field(default_factory=StaticMeta)


@dataclass
class SensorSeries:
    """One sensor's record as read from a file.

    Attributes:
        meta: Station and sensor metadata.
        time: Observation times, `datetime64[ns]` UTC, ascending and unique.
        values: Values as float64 (m3 m-3 for soil moisture); missing markers (-9999, -999.99) are NaN.
        flags: Quality flags per value (`G`, `M`, `D03`, `C02,D04`, ...; "" where the source has none).
        provider_flags: Data provider's flags per value ("" where absent).
        lines: 1-based line (or table row) of each value in its file, for reports.
        daily: True when each value is already a daily mean (time at 00:00 of its day).
        has_flags: False for sources without per-value quality flags (then flags are not checked).
    """

    meta: SensorMeta
    time: np.ndarray
    values: np.ndarray
    flags: np.ndarray
    provider_flags: np.ndarray
    lines: np.ndarray
    daily: bool = False
    has_flags: bool = True


@dataclass
class FileContent:
    """Everything read from one file.

    Attributes:
        series: One entry per sensor and variable (a combined CEOP file or a USCRN table holds many).
        rejected: Record lines (or rows) dropped while reading, with the reason.
        n_records: Non-blank record lines (or rows) examined, good and bad.
        layout: Name of the reader that read the file.
    """

    series: list[SensorSeries]
    rejected: list[Rejection] = field(default_factory=list)
    n_records: int = 0
    layout: str = ""
