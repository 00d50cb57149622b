"""ISMN "header + values" `.stm` files (the current ISMN default layout), and the record-line checks
all ISMN text readers share.

Rules for record lines (every ISMN text reader; each bad line is dropped on its own and listed with
its line number and reason, the rest of the file is kept):

* a line with another number of fields than the layout has is rejected ("record has N fields");
  blank lines are skipped silently;
* the date/time must be `YYYY/MM/DD HH:MM` and a real calendar date (1800-2200) and time, else the
  line is rejected;
* the value must be a finite decimal number (`-9999`, `0.1410`, `1e-3`); `abc`, `nan`, `0,25` are
  rejected. The missing marker -9999 (and -999.99 in the old CEOP layout) becomes NaN and is kept
  (quality control then counts it as missing);
* a flag token longer than 64 bytes is garbage and the line is rejected; flags are otherwise read
  as they are (`G`, `D03`, `C02,D04`, also quoted `"C02,D04"` with the quotes removed); unknown
  flags are kept and reported by quality control;
* records are sorted by time; a repeated timestamp keeps the first line in the file and rejects the
  later ones. (The `ismn` package keeps both; a daily mean must not count one observation twice.)
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from somocloud.insitu.model import FileContent, InSituFileError, Rejection, SensorMeta
from somocloud.insitu.readers import (
    IsmnName,
    check_station,
    finish_records,
    first_lines,
    looks_binary,
    no_records_reason,
    normalise_lon,
    parse_ismn_name,
    register_reader,
)
from somocloud.insitu.tokens import Tokens

ISMN_MISSING = (-9999.0,)
"""ISMN's missing-value marker (flag `M`)."""
DATE_START = re.compile(r"^\s*\d{4}/\d{2}/\d{2}\s+\d{2}:\d{2}\s")
"""A line that starts like an ISMN record (`YYYY/MM/DD HH:MM `)."""
_HEADER_NUMERIC = ("LAT", "LON", "ELEV", "DEPTH_FROM", "DEPTH_TO")
_HEADER_FIELDS = "CSE NETWORK STATION LAT LON ELEV DEPTH_FROM DEPTH_TO SENSOR"
NAME_RULE = (
    "file name does not follow the ISMN pattern "
    "CSE_NETWORK_STATION_VAR_FROM_TO_SENSOR_START_END.stm, so its variable is unknown"
)


class RecordChecker:
    """Collects the record lines of one file that fail a check, with their line numbers and reasons.

    Attributes:
        tok: The file's tokens.
        rows: 0-based line indexes of the candidate record lines.
        ok: Which of `rows` passed every check so far.
        rejected: The failed lines.
    """

    def __init__(self, tok: Tokens, rows: np.ndarray, name: str) -> None:
        self.tok = tok
        self.rows = rows
        self.name = name
        self.ok = np.ones(rows.size, dtype=bool)
        self.rejected: list[Rejection] = []

    def _use(self, rows_mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The rows to convert (good, and in `rows_mask` if given) as a mask and as line indexes."""
        use = self.ok if rows_mask is None else self.ok & rows_mask
        return use, (self.rows if use.all() else self.rows[use])

    @staticmethod
    def _spread(
        use: np.ndarray, parsed: np.ndarray, ok: np.ndarray, fill: object
    ) -> tuple[np.ndarray, np.ndarray]:
        """`parsed` (converted on the `use` rows) on all rows with `fill` elsewhere, and the bad rows
        (used but not ok). When every row was used (the usual case) the arrays are taken as they are."""
        if use.all():
            return parsed, ~ok
        out = np.full(use.size, fill, dtype=parsed.dtype)
        out[use] = parsed
        bad = np.zeros(use.size, dtype=bool)
        bad[use] = ~ok
        return out, bad

    def reject(self, bad: np.ndarray, reason: Callable[[int], str]) -> None:
        """Reject the still-good rows where `bad` is True; `reason(i)` words the problem of row i."""
        if not bad.any():
            return
        for i in np.flatnonzero(bad & self.ok):
            self.rejected.append(Rejection(self.name, int(self.rows[i]) + 1, reason(int(i))))
        self.ok &= ~bad

    def field_counts(self, allowed: tuple[int, ...], describe: str) -> None:
        """Reject lines with another number of fields than `allowed` (`describe` names them)."""
        counts = self.tok.count[self.rows]
        good = np.zeros(counts.size, dtype=bool)
        for n in allowed:  # a comparison per allowed count: cheaper than np.isin for a few
            good |= counts == n
        self.reject(
            ~good,
            lambda i: f"record has {counts[i]} fields, expected {max(allowed)} ({describe})",
        )

    def datetimes(self, k_date: int, k_time: int) -> np.ndarray:
        """Tokens k_date and k_time as `datetime64[ns]` on the good rows (NaT elsewhere)."""
        use, rows = self._use(None)
        parsed, ok = self.tok.datetimes(rows, k_date, k_time)
        stamps, bad = self._spread(use, parsed, ok, np.datetime64("NaT"))
        self.reject(
            bad, lambda i: f"date/time {self._stamp(i, k_date, k_time)!r} is not a valid YYYY/MM/DD HH:MM"
        )
        return stamps

    def _stamp(self, i: int, k_date: int, k_time: int) -> str:
        row = int(self.rows[i])
        return f"{self.tok.raw(row, k_date)} {self.tok.raw(row, k_time)}"

    def numbers(self, k: int, field: str, rows_mask: np.ndarray | None = None) -> np.ndarray:
        """Token k as numbers on the good rows (and, if given, only where `rows_mask`); NaN elsewhere."""
        use, rows = self._use(rows_mask)
        parsed, ok = self.tok.numbers(rows, k)
        values, bad = self._spread(use, parsed, ok, np.nan)
        self.reject(bad, lambda i: f"{field} {self.tok.raw(int(self.rows[i]), k)!r} is not a number")
        return values

    def text(self, k: int, field: str, rows_mask: np.ndarray | None = None) -> np.ndarray:
        """Token k as text on the good rows (and, if given, only where `rows_mask`); "" elsewhere."""
        use, rows = self._use(rows_mask)
        parsed, ok = self.tok.text(rows, k, strip='"')
        out, bad = self._spread(use, parsed, ok, "")
        self.reject(bad, lambda i: f"{field} {self.tok.raw(int(self.rows[i]), k)!r} is too long to be a flag")
        return out


def record_rows(tok: Tokens, start: int) -> np.ndarray:
    """0-based indexes of the non-blank lines from line index `start` on."""
    rows = np.arange(start, tok.n_lines)
    return rows[tok.count[rows] > 0]


def check_bytes(name: str, data: bytes) -> None:
    """`InSituFileError` for an empty or binary file."""
    if not data.strip():
        raise InSituFileError(name, None, "empty file")
    if looks_binary(data[:4096]):
        raise InSituFileError(name, None, "binary content, not an ISMN text file")


class HeaderValuesReader:
    """ISMN "header + values" `.stm` files (the current ISMN default layout).

    Line 1 (the first non-blank line): `CSE NETWORK STATION LAT LON ELEV DEPTH_FROM DEPTH_TO SENSOR`
    (whitespace separated; the sensor is the rest of the line and may contain spaces). Then one record
    per line: `YYYY/MM/DD HH:MM value ismn_flag provider_flag` (times UTC). Records with only 4 fields
    (no provider flag, seen in real SMOSMANIA and SCAN files) are accepted. The variable comes from the
    file name (`..._sm_...`), depths and coordinates from the header (a 0-360 longitude is moved to
    [-180, 180)). Record lines follow the module's rules; the whole file is rejected for an empty or
    binary file, a bad header (field count, non-numeric or impossible LAT/LON/depths), a file name
    without a variable, or when no record line is valid.

    Differences from `ismn` 1.5.4 (`DataFile`, same file): it takes network and station from the
    folder and file name (`AdamsRanch#1`), this reader from the header (`Adams_Ranch_#1`: ISMN writes
    spaces as `_` in headers and drops them in names); it keeps duplicate timestamps and -9999 values.
    Timestamps, values, flags, depths and coordinates are otherwise identical (tests/test_insitu_parity).
    """

    name = "ismn-header-values"

    def can_read(self, name: str, head: bytes) -> bool:
        """A text file whose first non-blank line is not a record, with either 9+ fields (a header)
        or a record on the next line. CEOP files start every line with a date."""
        if not head.strip() or looks_binary(head):
            return False
        lines = first_lines(head, 2)
        if DATE_START.match(lines[0] + " "):
            return False
        return len(lines[0].split()) >= 9 or (len(lines) > 1 and bool(DATE_START.match(lines[1] + " ")))

    def read(self, name: str, data: bytes) -> FileContent:
        check_bytes(name, data)
        parsed = parse_ismn_name(name)
        tok = Tokens(data)
        nonblank = np.flatnonzero(tok.count > 0)
        if nonblank.size == 0:
            raise InSituFileError(name, None, "empty file (no text)")
        header_at = int(nonblank[0])
        meta = _parse_header(tok.line_tokens(header_at), name, header_at + 1, parsed)
        if parsed is None:
            raise InSituFileError(name, None, NAME_RULE)
        rows = record_rows(tok, header_at + 1)
        if rows.size == 0:
            raise InSituFileError(name, None, "no record lines after the header")
        check = RecordChecker(tok, rows, name)
        check.field_counts((4, 5), "date time value ismn_flag provider_flag")
        time = check.datetimes(0, 1)
        values = check.numbers(2, "value")
        flags = check.text(3, "ismn_flag")
        provider = check.text(4, "provider_flag", tok.count[rows] == 5)
        if not check.ok.any():
            raise InSituFileError(name, None, no_records_reason(check.rejected))
        ok, good_rows = check.ok, rows
        if not ok.all():  # usually every line is good: no copies then
            time, values, flags, provider, good_rows = (a[ok] for a in (time, values, flags, provider, rows))
        series, dups = finish_records(meta, time, values, flags, provider, good_rows + 1, ISMN_MISSING)
        rejected = sorted(check.rejected + dups, key=lambda r: r.line or 0)
        return FileContent([series], rejected, int(rows.size), self.name)


def _parse_header(tokens: list[str], name: str, line: int, parsed: IsmnName | None) -> SensorMeta:
    """The header line → metadata; InSituFileError naming the field on any problem."""
    if DATE_START.match(" ".join(tokens) + " "):
        raise InSituFileError(name, line, f"first line is a record, not the header ({_HEADER_FIELDS})")
    if len(tokens) < 9:
        raise InSituFileError(
            name, line, f"header has {len(tokens)} fields, expected at least 9 ({_HEADER_FIELDS})"
        )
    numbers: dict[str, float] = {}
    for key, token in zip(_HEADER_NUMERIC, tokens[3:8], strict=True):
        try:
            numbers[key] = float(token)
        except ValueError:
            raise InSituFileError(name, line, f"header field {key} {token!r} is not a number") from None
        if not np.isfinite(numbers[key]):
            raise InSituFileError(name, line, f"header field {key} {token!r} is not finite")
    check_station(name, line, numbers["LAT"], numbers["LON"], numbers["DEPTH_FROM"], numbers["DEPTH_TO"])
    return SensorMeta(
        network=tokens[1],
        station=tokens[2],
        sensor=" ".join(tokens[8:]),
        variable=parsed.variable if parsed is not None else "",
        source_file=name,
        lat=numbers["LAT"],
        lon=normalise_lon(numbers["LON"]),
        elevation=numbers["ELEV"],
        depth_from=numbers["DEPTH_FROM"],
        depth_to=numbers["DEPTH_TO"],
    )


register_reader(HeaderValuesReader())
