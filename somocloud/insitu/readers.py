"""Readers of in-situ station files: a small `InSituReader` protocol, a registry, and the ISMN
header+values (`.stm`) reader.

A reader turns one file into a `SensorSeries` (station metadata plus sub-daily timestamps, values and
flags). A file that cannot be used at all raises `InSituFileError` (file, line, reason); a single bad
record line is *not* fatal: it is dropped and recorded in `SensorSeries.rejected`, and the rest of the
file is kept. Which reader handles a file is decided by `reader_for(url, head)` from the file's first
bytes, so new layouts (CEOP, zip members) plug in by registering another reader.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from somocloud import stores

HEAD_BYTES = 4096
"""How many leading bytes of a file `reader_for` hands to each reader's `can_read`."""
MISSING_VALUE = -9999.0
"""ISMN's missing-value marker (flag `M`)."""

_DATE_START = re.compile(r"^\s*\d{4}/\d{2}/\d{2}\s")
_HEADER_NUMERIC = ("LAT", "LON", "ELEV", "DEPTH_FROM", "DEPTH_TO")


@dataclass(frozen=True)
class Rejection:
    """One rejected file or line, as written to the quarantine report.

    Attributes:
        file: The file, relative to the folder being ingested (or its URL when read alone).
        line: 1-based line number after normalising line endings; None for a whole-file reason.
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


@dataclass
class SensorSeries:
    """One sensor's sub-daily record as read from a station file.

    Attributes:
        network: ISMN network name (as in the header).
        station: Station name (as in the header; may contain `#`, `(`, `)` and `,`).
        sensor: Sensor name (may contain spaces).
        lat: Latitude in degrees north.
        lon: Longitude in degrees east, in [-180, 180).
        elevation: Station elevation in m.
        depth_from: Upper end of the measured depth range in m (positive down).
        depth_to: Lower end of the measured depth range in m.
        variable: Measured variable code from the file name (`sm` for soil moisture).
        source_file: The file the series came from.
        time: Observation times, `datetime64[ns]` UTC, ascending and unique.
        values: Values as float64 (m3 m-3 for soil moisture); ISMN's -9999 is NaN here.
        flags: ISMN quality flags per value (`G`, `M`, `D03`, `C02,D04`, ...).
        provider_flags: Data provider's flags per value (empty string where absent).
        rejected: Record lines that were dropped while reading, with the reason.
    """

    network: str
    station: str
    sensor: str
    lat: float
    lon: float
    elevation: float
    depth_from: float
    depth_to: float
    variable: str
    source_file: str
    time: np.ndarray
    values: np.ndarray
    flags: np.ndarray
    provider_flags: np.ndarray
    rejected: list[Rejection] = field(default_factory=list)


@runtime_checkable
class InSituReader(Protocol):
    """A reader of one in-situ file layout."""

    name: str
    """Short name of the layout (used in logs)."""

    def can_read(self, url: str, head: bytes) -> bool:
        """Whether this reader recognises the file from its URL and its first bytes (a cheap sniff)."""
        ...

    def read(self, url: str, data: bytes | None = None, name: str | None = None) -> SensorSeries:
        """Parse the file (`data`: its bytes when the caller already has them; `name`: how to name the
        file in reports, default its URL). Raises `InSituFileError` if the file cannot be used."""
        ...


READERS: list[InSituReader] = []
"""Registered readers, asked in order."""


def register_reader(reader: InSituReader) -> InSituReader:
    """Add a reader to the registry (later registrations are asked after earlier ones)."""
    READERS.append(reader)
    return reader


def reader_for(url: str, head: bytes) -> InSituReader | None:
    """The first registered reader that recognises the file, or None."""
    return next((r for r in READERS if r.can_read(url, head)), None)


def decode_text(data: bytes) -> str:
    """Bytes → text with every line ending (CRLF, CR, LF, mixed) normalised to LF.

    UTF-8 is tried first, Latin-1 (which ISMN uses in some metadata) as the fallback."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def looks_binary(head: bytes) -> bool:
    """True for bytes that are not text: NUL bytes or many control characters."""
    if b"\x00" in head:
        return True
    control = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13))
    return control > max(1, len(head) // 100)


# ISMN file name: CSE_Network_Station_Var_depthfrom_depthto_Sensor_start_end.stm. Names and the sensor
# may contain '_' (ISMN itself writes '-'), so the variable (letters and '-') is found as the first
# field followed by the two depths.
_FILE_NAME = re.compile(
    r"^(?P<prefix>.+?)_(?P<var>[A-Za-z][A-Za-z-]*)_(?P<dfrom>-?\d+\.\d+)_(?P<dto>-?\d+\.\d+)_"
    r"(?P<sensor>.+)_(?P<start>\d{8})_(?P<end>\d{8})\.stm$"
)
_SOIL_MOISTURE_CODES = {"sm", "soil-moisture", "soilmoisture"}


def variable_from_name(url: str) -> str | None:
    """The variable code of an ISMN file name (`sm`, `ts`, `p`, ...), lower case; None if the name
    does not follow the ISMN pattern. Old spellings of soil moisture (`Soil-Moisture`) give `sm`."""
    m = _FILE_NAME.match(url.rstrip("/").rsplit("/", 1)[-1])
    if m is None:
        return None
    var = m.group("var").lower()
    return "sm" if var in _SOIL_MOISTURE_CODES else var


class HeaderValuesReader:
    """ISMN "header + values" `.stm` files (the current ISMN default layout).

    Line 1: `CSE NETWORK STATION LAT LON ELEV DEPTH_FROM DEPTH_TO SENSOR` (whitespace separated, the
    sensor is the rest of the line and may contain spaces). Then one record per line:
    `YYYY/MM/DD HH:MM value ismn_flag provider_flag` (times UTC). Records with only 4 fields (no
    provider flag, seen in real SMOSMANIA files) are accepted; blank lines are skipped.

    A record line is rejected on its own (the rest of the file is kept) when it has another number
    of fields, a date/time that does not parse, a value that is not a number, or a timestamp already
    seen in the file (the first occurrence wins). Records are sorted by time. The whole file is
    rejected for an empty file, a bad header, or when no record line is valid."""

    name = "ismn-header-values"

    def can_read(self, url: str, head: bytes) -> bool:
        """A text file whose first line is a header (not a record starting with a date) with at least
        9 fields. CEOP files start every line with a date and are left to another reader."""
        if not head.strip() or looks_binary(head):
            return False
        first = decode_text(head).split("\n", 1)[0]
        return len(first.split()) >= 9 and not _DATE_START.match(first)

    def read(self, url: str, data: bytes | None = None, name: str | None = None) -> SensorSeries:
        name = name or url
        if data is None:
            data = stores.read_bytes(url)
        if not data.strip():
            raise InSituFileError(name, None, "empty file")
        if looks_binary(data[:HEAD_BYTES]):
            raise InSituFileError(name, None, "binary content, not an ISMN text file")
        lines = decode_text(data).split("\n")
        h = _parse_header(lines[0], name)
        time, values, flags, pflags, rejected = _parse_records(lines, name)
        return SensorSeries(
            network=h.network,
            station=h.station,
            sensor=h.sensor,
            lat=h.lat,
            lon=h.lon,
            elevation=h.elevation,
            depth_from=h.depth_from,
            depth_to=h.depth_to,
            variable=variable_from_name(url) or "sm",
            source_file=name,
            time=time,
            values=values,
            flags=flags,
            provider_flags=pflags,
            rejected=rejected,
        )


class _Header(NamedTuple):
    network: str
    station: str
    sensor: str
    lat: float
    lon: float
    elevation: float
    depth_from: float
    depth_to: float


def _parse_header(line: str, name: str) -> _Header:
    """Line 1 → metadata; InSituFileError naming the field on any problem."""
    tokens = line.split()
    if len(tokens) < 9:
        raise InSituFileError(
            name,
            1,
            f"header has {len(tokens)} fields, expected at least 9 "
            "(CSE NETWORK STATION LAT LON ELEV DEPTH_FROM DEPTH_TO SENSOR)",
        )
    numbers: dict[str, float] = {}
    for key, token in zip(_HEADER_NUMERIC, tokens[3:8], strict=True):
        try:
            numbers[key] = float(token)
        except ValueError:
            raise InSituFileError(name, 1, f"header field {key} {token!r} is not a number") from None
        if not np.isfinite(numbers[key]):
            raise InSituFileError(name, 1, f"header field {key} {token!r} is not finite")
    if not -90.0 <= numbers["LAT"] <= 90.0:
        raise InSituFileError(name, 1, f"header field LAT {tokens[3]!r} is outside [-90, 90]")
    if not -180.0 <= numbers["LON"] <= 360.0:
        raise InSituFileError(name, 1, f"header field LON {tokens[4]!r} is outside [-180, 360]")
    if numbers["DEPTH_TO"] < numbers["DEPTH_FROM"]:
        raise InSituFileError(name, 1, f"header DEPTH_TO {tokens[7]!r} is above DEPTH_FROM {tokens[6]!r}")
    return _Header(
        network=tokens[1],
        station=tokens[2],
        sensor=" ".join(tokens[8:]),
        lat=numbers["LAT"],
        lon=(numbers["LON"] + 180.0) % 360.0 - 180.0,  # 0-360 headers → [-180, 180)
        elevation=numbers["ELEV"],
        depth_from=numbers["DEPTH_FROM"],
        depth_to=numbers["DEPTH_TO"],
    )


def _parse_records(
    lines: list[str], name: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[Rejection]]:
    """Record lines (everything after line 1) → sorted arrays plus the rejected lines.

    Splitting is one `str.split` per line (the field count varies on bad lines); every conversion
    and check after that is vectorised."""
    split = [ln.split() for ln in lines[1:]]
    counts = np.fromiter((len(t) for t in split), dtype=np.int64, count=len(split))
    lineno = np.arange(2, len(lines) + 1)
    rejected: list[Rejection] = []

    wrong = (counts != 0) & (counts != 4) & (counts != 5)
    for i in np.flatnonzero(wrong):
        reason = f"record has {counts[i]} fields, expected 5 (date time value ismn_flag provider_flag)"
        rejected.append(Rejection(name, int(lineno[i]), reason))
    ok = np.flatnonzero((counts == 4) | (counts == 5))
    if ok.size == 0:
        raise InSituFileError(name, None, _no_records_reason(rejected))

    fields = [split[i] for i in ok]
    stamp = [f"{t[0]} {t[1]}" for t in fields]
    raw_value = [t[2] for t in fields]
    flags = np.array([t[3].strip('"') for t in fields], dtype=object)
    pflags = np.array([t[4].strip('"') if len(t) == 5 else "" for t in fields], dtype=object)
    lineno = lineno[ok]

    time = pd.to_datetime(pd.Series(stamp, dtype=object), format="%Y/%m/%d %H:%M", errors="coerce").to_numpy(
        "datetime64[ns]"
    )
    values = pd.to_numeric(pd.Series(raw_value, dtype=object), errors="coerce").to_numpy("float64")
    bad_time = np.isnat(time)
    bad_value = ~np.isfinite(values) & ~bad_time
    for i in np.flatnonzero(bad_time):
        rejected.append(Rejection(name, int(lineno[i]), f"date/time {stamp[i]!r} is not YYYY/MM/DD HH:MM"))
    for i in np.flatnonzero(bad_value):
        rejected.append(Rejection(name, int(lineno[i]), f"value {raw_value[i]!r} is not a number"))

    keep = ~(bad_time | bad_value)
    time, values, flags, pflags, lineno = time[keep], values[keep], flags[keep], pflags[keep], lineno[keep]
    # Stable sort keeps file order among equal stamps, so the first occurrence survives.
    order = np.argsort(time, kind="stable")
    time, values, flags, pflags, lineno = (
        time[order],
        values[order],
        flags[order],
        pflags[order],
        lineno[order],
    )
    dup = np.zeros(time.size, dtype=bool)
    dup[1:] = time[1:] == time[:-1]
    for i in np.flatnonzero(dup):
        rejected.append(Rejection(name, int(lineno[i]), f"duplicate timestamp {pd.Timestamp(time[i])}"))
    keep = ~dup
    if not keep.any():
        raise InSituFileError(name, None, _no_records_reason(rejected))

    values = values[keep]
    values[np.isclose(values, MISSING_VALUE)] = np.nan
    rejected.sort(key=lambda r: r.line or 0)
    return time[keep], values, flags[keep], pflags[keep], rejected


def _no_records_reason(rejected: list[Rejection]) -> str:
    if not rejected:
        return "no record lines after the header"
    first = rejected[0]
    return f"no valid record line ({len(rejected)} rejected; first, line {first.line}: {first.reason})"


register_reader(HeaderValuesReader())
