"""Station and dataset metadata of ISMN downloads: `*_static_variables.csv` and `Metadata.xml`.

`*_static_variables.csv` (one per station folder) lists site properties, `;`-separated, UTF-8 or
Latin-1 (`°`), with or without a header row (`quantity_name;unit;depth_from[m];depth_to[m];value;
description;quantity_source_name;...`). Texture, organic carbon and saturation come per depth layer
(HWSD 0-0.3 and 0.3-1 m); land cover (ESA CCI 2000/2005/2010) and climate class (Koeppen-Geiger
2007) per site. For a sensor, each layered quantity is taken from the layer that overlaps the
sensor's depth range best (the `ismn` package's rule: overlap normalised by the joint range; ties go
to the first row; a layer that does not touch the sensor's range is never used). Texture and organic
carbon are converted from % weight to fractions. A bad row (too few fields, a non-numeric value or
depth) is reported and skipped; the station's data is never rejected for its metadata.

`Metadata.xml` (ISO 19115, one per download) describes the whole download, not stations: its title,
date, bounding box and time period are kept as dataset attributes of the `insitu` store.
"""

from __future__ import annotations

import csv
import math
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass

from somocloud.insitu.model import InSituFileError, Rejection, StaticMeta
from somocloud.insitu.readers import decode_text

STATIC_SUFFIX = "_static_variables.csv"
"""File name ending of ISMN station metadata files."""
DATASET_METADATA = "Metadata.xml"
"""File name of ISMN download metadata."""
CSV_COLUMNS = (
    "quantity_name",
    "unit",
    "depth_from[m]",
    "depth_to[m]",
    "value",
    "description",
    "quantity_source_name",
)
"""Columns of `*_static_variables.csv` when its header row is absent (ISMN's order)."""
_LAYERED = {
    "clay fraction": "clay",
    "sand fraction": "sand",
    "silt fraction": "silt",
    "organic carbon": "organic_carbon",
    "saturation": "saturation",
}
_LAND_COVER_SOURCES = ("CCI_landcover_2010", "CCI_landcover_2005", "CCI_landcover_2000")
_CLIMATE_SOURCE = "koeppen_geiger_2007"


@dataclass(frozen=True)
class StaticEntry:
    """One row of a static-variables file that we use."""

    field: str
    depth_from: float
    depth_to: float
    value: float


@dataclass(frozen=True)
class StationStatics:
    """A station's static variables, ready to be narrowed to a sensor's depth.

    Attributes:
        layered: Per-depth quantities in file order (texture and organic carbon as fractions).
        land_cover: ESA CCI land cover class (the latest of 2010, 2005, 2000 given); NaN if none.
        climate_class: Koeppen-Geiger 2007 class; "" if none.
    """

    layered: tuple[StaticEntry, ...] = ()
    land_cover: float = math.nan
    climate_class: str = ""

    def for_depth(self, depth_from: float, depth_to: float) -> StaticMeta:
        """The site properties for a sensor measuring `depth_from..depth_to` m (see module docs)."""
        best: dict[str, tuple[float, float]] = {}
        for entry in self.layered:
            if not _overlaps(depth_from, depth_to, entry.depth_from, entry.depth_to):
                continue
            p = overlap_fraction(depth_from, depth_to, entry.depth_from, entry.depth_to)
            if entry.field not in best or p > best[entry.field][0]:
                best[entry.field] = (p, entry.value)
        values = {k: v for k, (_, v) in best.items()}
        return StaticMeta(**values, land_cover=self.land_cover, climate_class=self.climate_class)


def overlap_fraction(a_from: float, a_to: float, b_from: float, b_to: float) -> float:
    """How well two depth ranges match (the `ismn` package's `Depth.perc_overlap`): 1 equal, 0
    touching or a point inside a range, -1 apart; otherwise the shared part of the joint range."""
    if a_from == b_from and a_to == b_to:
        return 1.0
    span = max(a_to, b_to) - min(a_from, b_from)
    p = round(1.0 - abs(a_from - b_from) / span - abs(a_to - b_to) / span, 7)
    return -1.0 if p < 0 else p


def _overlaps(a_from: float, a_to: float, b_from: float, b_to: float) -> bool:
    return bool(b_from <= a_to and a_from <= b_to)


def _number(text: str) -> float:
    value = float(text.strip())
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def parse_static_variables(name: str, data: bytes) -> tuple[StationStatics, list[Rejection]]:
    """Parse a `*_static_variables.csv` (see module docs); bad rows are reported, never fatal."""
    rows = list(csv.reader(decode_text(data).lstrip("\ufeff").split("\n"), delimiter=";"))
    rejected: list[Rejection] = []
    columns = list(CSV_COLUMNS)
    start = 0
    if rows and rows[0] and rows[0][0].strip().lower() == "quantity_name":
        columns, start = [c.strip() for c in rows[0]], 1
    col = {c: i for i, c in enumerate(columns)}
    need = ("quantity_name", "depth_from[m]", "depth_to[m]", "value", "quantity_source_name")
    missing = [c for c in need if c not in col]
    if missing:
        return StationStatics(), [Rejection(name, 1, f"header lacks columns {missing}")]
    width = max(col[c] for c in need) + 1
    layered: list[StaticEntry] = []
    land_cover: dict[str, float] = {}
    climate = ""
    for i, row in enumerate(rows[start:], start=start + 1):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < width:
            rejected.append(Rejection(name, i, f"row has {len(row)} fields, expected at least {width}"))
            continue
        quantity = row[col["quantity_name"]].strip().lower()
        source = row[col["quantity_source_name"]].strip()
        value = row[col["value"]].strip()
        try:
            if quantity in _LAYERED:
                unit = row[col["unit"]] if "unit" in col else ""
                per = 100.0 if "%" in unit else 1.0  # divide (not * 0.01): 41 % gives exactly 0.41
                d_from, d_to = _number(row[col["depth_from[m]"]]), _number(row[col["depth_to[m]"]])
                layered.append(StaticEntry(_LAYERED[quantity], d_from, d_to, _number(value) / per))
            elif quantity == "land cover classification" and source in _LAND_COVER_SOURCES:
                land_cover[source] = _number(value)
            elif quantity == "climate classification" and source == _CLIMATE_SOURCE:
                climate = value
        except ValueError:
            rejected.append(
                Rejection(name, i, f"{quantity!r}: value or depth is not a number ({';'.join(row[:5])})")
            )
    lc = next((land_cover[s] for s in _LAND_COVER_SOURCES if s in land_cover), math.nan)
    return StationStatics(tuple(layered), lc, climate), rejected


@dataclass(frozen=True)
class DatasetMeta:
    """What `Metadata.xml` says about a download (missing items are "" or NaN)."""

    source: str
    title: str
    date: str
    west: float
    east: float
    south: float
    north: float
    time_start: str
    time_end: str

    def as_dict(self) -> dict[str, object]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _find_text(root: ET.Element, *path: str) -> str:
    """Text of the first element reached by descending through elements with these local names."""
    node: ET.Element | None = root
    for step in path:
        node = (
            next((e for e in node.iter() if _local(e.tag) == step and e is not node), None)
            if node is not None
            else None
        )
    return (node.text or "").strip() if node is not None else ""


def parse_metadata_xml(name: str, data: bytes) -> DatasetMeta:
    """Parse an ISMN `Metadata.xml`; `InSituFileError` with the line for XML that does not parse."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise InSituFileError(name, exc.position[0], f"XML does not parse: {exc}") from None

    def num(*path: str) -> float:
        try:
            return float(_find_text(root, *path))
        except ValueError:
            return math.nan

    return DatasetMeta(
        source=name,
        title=_find_text(root, "identificationInfo", "citation", "title", "CharacterString"),
        date=_find_text(root, "dateStamp", "Date"),
        west=num("westBoundLongitude", "Decimal"),
        east=num("eastBoundLongitude", "Decimal"),
        south=num("southBoundLatitude", "Decimal"),
        north=num("northBoundLatitude", "Decimal"),
        time_start=_find_text(root, "beginPosition"),
        time_end=_find_text(root, "endPosition"),
    )
