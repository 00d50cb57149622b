"""Vectorised whitespace tokenising of whole text files: numpy on the file's bytes, no per-line Python.

ISMN station files are lines of whitespace-separated tokens. `Tokens` finds every token of a file at
once (byte offsets of token starts and ends, tokens per line; space and every control character
separate tokens), and converts the k-th token of many lines at once into numbers, date-times or
short strings. Tokens are first factorised (runs of equal tokens, else hashing their bytes as uint64
words), so each distinct date, value or flag is parsed once: an hourly file has one date per day and
few flags (`HH:MM` times, fixed-width, are parsed directly on every line). Only
tokens that fail the vectorised parse (a value such as `1e-3`, garbage) are looked at one by one, so
a well-formed file costs a handful of numpy passes over its bytes and no per-line Python.

Any line endings are understood without rewriting the bytes: LF, CRLF and a lone CR each end a line,
also mixed within one file. Line numbers are 1-based and count line breaks that way (an LF followed
by a CR is therefore two line breaks, as editors show it); a blank line is a line with no token.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

_NEWLINE = 10
_CR = 13
_DIGIT0 = 48

MAX_TEXT_WIDTH = 64
"""Longest flag or name token accepted (bytes); longer tokens are garbage, not ISMN flags."""
MAX_NUMBER_WIDTH = 32
"""Longest numeric token accepted (bytes)."""
_FAST_DIGITS = 15
"""Numbers with at most this many digits are parsed exactly in the vectorised path (< 2**53)."""
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_HASH_ABOVE = 256
"""Text columns with more runs of equal tokens than this are hashed (each distinct token decoded once)."""
_POW10 = 10.0 ** np.arange(23)
_BYTE_MASK = np.array([(1 << (8 * i)) - 1 for i in range(8)] + [2**64 - 1], dtype=np.uint64)
"""_BYTE_MASK[i] keeps the first i bytes of a little-endian uint64."""
_MIN_YEAR, _MAX_YEAR = 1800, 2200
_NS_PER_MINUTE = 60_000_000_000
_DAYS_IN_MONTH = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


def days_from_civil(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of proleptic Gregorian dates (vectorised; H. Hinnant's algorithm)."""
    y = year - (month <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    mp = (month + 9) % 12
    doy = (153 * mp + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def days_in_month(year: np.ndarray, month: np.ndarray) -> np.ndarray:
    """Length of each month (1..12) of each year, leap years included."""
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    return _DAYS_IN_MONTH[np.clip(month, 1, 12) - 1] + ((month == 2) & leap)


def _line_ends(data: bytes, buf: np.ndarray) -> np.ndarray:
    """Byte offsets of the line breaks: every LF, and every CR not followed by LF (CRLF is one
    break), plus the end of a last line without a break. No rewriting (copying) of the bytes."""
    has_cr, has_lf = b"\r" in data, b"\n" in data
    if has_cr and has_lf:
        lone_cr = buf == _CR
        lone_cr[:-1] &= buf[1:] != _NEWLINE
        ends = np.flatnonzero((buf == _NEWLINE) | lone_cr)
    else:
        ends = np.flatnonzero(buf == (_CR if has_cr else _NEWLINE))
    if buf.size and (ends.size == 0 or ends[-1] != buf.size - 1):
        ends = np.append(ends, buf.size)
    return ends


class Tokens:
    """Every whitespace-separated token of a text file, found in one vectorised pass.

    Attributes:
        buf: The file's bytes after `normalise_newlines` (uint8).
        start: Byte offset of each token's first byte.
        end: Byte offset one past each token's last byte.
        count: Number of tokens on each line (index = line number - 1).
        first: Index (into `start`/`end`) of each line's first token.
    """

    def __init__(self, data: bytes) -> None:
        self.buf = np.frombuffer(data, dtype=np.uint8)
        # Zero padding lets fixed-width windows start at any token without running off the end.
        self._padded = np.concatenate([self.buf, np.zeros(MAX_TEXT_WIDTH, dtype=np.uint8)])
        # The 8 bytes from every offset as one little-endian uint64 (an unaligned, overlapping view).
        self._u64 = np.ndarray((self._padded.size - 7,), dtype="<u8", buffer=self._padded, strides=(1,))
        self._line_end = _line_ends(data, self.buf)
        # Space and every control character separate tokens (tab, CR, LF, VT, FF, NUL, ...).
        token_byte = np.zeros(self.buf.size + 2, dtype=bool)
        token_byte[1:-1] = self.buf > 32
        # Token starts and ends alternate among the changes of `token_byte` (bool: fast nonzero).
        edges = np.flatnonzero(token_byte[1:] != token_byte[:-1])
        self.start = edges[0::2]
        self.end = edges[1::2]
        upto = np.searchsorted(self.start, self._line_end)  # tokens on lines 0..i
        self.count = np.diff(upto, prepend=0)
        self.first = upto - self.count

    @property
    def n_lines(self) -> int:
        return int(self.count.size)

    def line_tokens(self, index: int) -> list[str]:
        """The tokens of line `index` (0-based) as text (UTF-8, Latin-1 where that fails)."""
        lo = int(self.first[index])
        hi = lo + int(self.count[index])
        return [
            _decode(self.buf[a:b].tobytes()) for a, b in zip(self.start[lo:hi], self.end[lo:hi], strict=True)
        ]

    def span(self, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Start and end offsets of token `k` (0-based) on each of `rows` (every row must have it)."""
        idx = self.first[rows] + k
        return self.start[idx], self.end[idx]

    def raw(self, row: int, k: int, limit: int = 40) -> str:
        """Token `k` of one line as text, shortened for messages."""
        s, e = self.span(np.array([row]), k)
        text = _decode(self.buf[int(s[0]) : int(e[0])].tobytes())
        return text if len(text) <= limit else text[:limit] + "..."

    def spans_equal(self, rows: np.ndarray, k_first: int, k_last: int, ref: bytes) -> np.ndarray:
        """Per row: whether the bytes from the start of token `k_first` to the end of token `k_last`
        (whitespace included) are exactly `ref`."""
        starts, _ = self.span(rows, k_first)
        _, ends = self.span(rows, k_last)
        same = ends - starts == len(ref)
        if len(ref) == 0:
            return same
        windows = sliding_window_view(self._padded, len(ref))
        idx = np.flatnonzero(same)  # equal length: the window lies inside the file
        same[idx] = (windows[starts[idx]] == np.frombuffer(ref, dtype=np.uint8)).all(axis=1)
        return same

    def text(
        self, rows: np.ndarray, k: int, strip: str = "", max_width: int = MAX_TEXT_WIDTH
    ) -> tuple[np.ndarray, np.ndarray]:
        """Token `k` of `rows` as an object array of str with the characters `strip` removed from both
        ends, and a mask of tokens no longer than `max_width` (longer ones come back cut)."""
        if rows.size == 0:
            return np.zeros(0, dtype=object), np.zeros(0, dtype=bool)
        block, _, codes, fits = self.distinct(rows, k, max_width, always=True)
        # Few distinct values per file (flags): decode each distinct value once, then broadcast.
        decoded = np.array([_decode(b.tobytes().rstrip(b"\0")).strip(strip) for b in block], dtype=object)
        return decoded[codes], fits

    def words(self, rows: np.ndarray, k: int, n_words: int) -> tuple[list[np.ndarray], np.ndarray]:
        """Token `k` of `rows` as `n_words` arrays of little-endian uint64 words (bytes 8j..8j+7 of
        each token, bytes after the token zeroed; longer tokens are cut), and each token's length."""
        s, e = self.span(rows, k)
        return self._words(s, e - s, n_words), e - s

    def _words(self, s: np.ndarray, length: np.ndarray, n_words: int) -> list[np.ndarray]:
        out = []
        shortest = int(length.min()) if length.size else 0
        for j in range(n_words):
            word = self._u64[s + 8 * j]
            if shortest < 8 * (j + 1):  # some token ends within this word: zero the bytes after it
                word &= _BYTE_MASK[np.minimum(np.maximum(length - 8 * j, 0), 8)]
            out.append(word)
        return out

    def distinct(
        self, rows: np.ndarray, k: int, max_width: int, always: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Token `k` of `rows` factorised: the (d, width) NUL-padded byte blocks and lengths of the d
        distinct tokens (cut at `max_width` rounded up to 8), each row's code into them, and a mask
        of rows whose token fits (longer tokens share a code with others of the same prefix). Numbers
        and dates (not `always`) are hashed only when runs of equal tokens are short on average."""
        s, e = self.span(rows, k)
        length = e - s
        n_words = -(-int(min(max(int(length.max()), 1), max_width)) // 8)
        words = self._words(s, length, n_words)
        codes, first = _factorize_rows(words, _HASH_ABOVE if always else rows.size // 4)
        block = np.stack([w[first] for w in words], axis=1).view(np.uint8).reshape(first.size, 8 * n_words)
        return block, length[first], codes, length <= 8 * n_words

    def numbers(self, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Token `k` of `rows` as float64, and a mask of tokens that are finite decimal numbers.

        Plain decimals (`-9999`, `0.1410`, `.5`, up to 15 digits) are parsed exactly by integer
        arithmetic on the digit bytes (the result equals Python's `float`); anything else (an
        exponent, too many digits) goes through `float` one token at a time. `nan`, `inf` and
        non-numbers are not ok (value NaN). Each distinct token is parsed once."""
        if rows.size == 0:
            return np.zeros(0), np.zeros(0, dtype=bool)
        block, length, codes, fits = self.distinct(rows, k, MAX_NUMBER_WIDTH)
        values, ok = _parse_decimals(block, length)
        for i in np.flatnonzero(~ok & (length <= MAX_NUMBER_WIDTH)):
            token = _decode(block[i, : length[i]].tobytes())
            if _FLOAT.match(token):
                v = float(token)
                if np.isfinite(v):
                    values[i], ok[i] = v, True
        return values[codes], ok[codes] & fits

    def datetimes(self, rows: np.ndarray, k_date: int, k_time: int) -> tuple[np.ndarray, np.ndarray]:
        """Tokens `k_date` (`YYYY/MM/DD`) and `k_time` (`HH:MM`) of `rows` as `datetime64[ns]`, and a
        mask of valid stamps (real calendar dates in 1800..2200, hours 0-23, minutes 0-59). Each
        distinct date is parsed once (one per day); times are parsed on every line."""
        if rows.size == 0:
            return np.zeros(0, dtype="datetime64[ns]"), np.zeros(0, dtype=bool)
        dblock, dlen, dcode, dfits = self.distinct(rows, k_date, 16)
        days, dok = _parse_dates(dblock, dlen)
        # Times change on every line (no runs) and are 5 bytes: parsing each one from its uint64 word
        # costs less than hashing them.
        s, e = self.span(rows, k_time)
        minutes, tok = _parse_clock_words(self._u64[s], e - s)
        ok = dok[dcode] & tok & dfits
        stamps = (days[dcode] * 1440 + minutes) * _NS_PER_MINUTE
        return np.where(ok, stamps, np.iinfo(np.int64).min).astype("datetime64[ns]"), ok


def _parse_decimals(block: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Plain decimal tokens (NUL-padded rows of `block`) → float64 and a mask of the parsed ones."""
    n, width = block.shape
    digit = (block >= _DIGIT0) & (block <= _DIGIT0 + 9)
    dot = block == 46
    negative = block[:, 0] == 45
    signed = negative | (block[:, 0] == 43)
    n_digits = _row_counts(digit)
    n_dots = _row_counts(dot)
    fast = (
        (length <= width)
        & (n_digits >= 1)
        & (n_dots <= 1)
        & (n_digits + n_dots + signed == length)
        & (n_digits <= _FAST_DIGITS)
    )
    mantissa = np.zeros(n, dtype=np.int64)
    decimals = np.zeros(n, dtype=np.int64)
    seen_dot = np.zeros(n, dtype=bool)
    with np.errstate(over="ignore"):  # overflow only on rows that are not `fast` (discarded)
        for j in range(width):
            d = digit[:, j]
            mantissa = np.where(d, mantissa * 10 + (block[:, j].astype(np.int64) - _DIGIT0), mantissa)
            decimals += d & seen_dot
            seen_dot |= dot[:, j]
    # Exact: mantissa < 2**53 and 10**decimals are exact doubles, and division rounds correctly.
    parsed = mantissa / _POW10[np.minimum(decimals, _POW10.size - 1)]
    parsed[negative] = -parsed[negative]
    return np.where(fast, parsed, np.nan), fast


def _row_counts(mask: np.ndarray) -> np.ndarray:
    """True entries per row of a 2-D bool array, as int64.

    Rows of 8k bytes are counted as k uint64 words with a popcount (a bool is one byte, 0 or 1):
    numpy's sum(axis=1) over such short rows is several times slower."""
    width = mask.shape[1]
    if width % 8 or not mask.flags.c_contiguous:
        return mask.sum(axis=1)
    bits = np.bitwise_count(mask.view(np.uint64))
    return bits[:, 0].astype(np.int64) if width == 8 else bits.sum(axis=1, dtype=np.int64)


def _digits(block: np.ndarray, positions: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The digits at `positions` of each row as int64 (n, len(positions)), and whether all are digits."""
    d = block[:, positions].astype(np.int64) - _DIGIT0
    return d, np.all((d >= 0) & (d <= 9), axis=1)


def _parse_dates(block: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`YYYY/MM/DD` tokens → days since 1970-01-01 and a validity mask."""
    d, digits_ok = _digits(block, [0, 1, 2, 3, 5, 6, 8, 9])
    year = d[:, 0] * 1000 + d[:, 1] * 100 + d[:, 2] * 10 + d[:, 3]
    month = d[:, 4] * 10 + d[:, 5]
    day = d[:, 6] * 10 + d[:, 7]
    ok = digits_ok & (length == 10) & (block[:, 4] == 47) & (block[:, 7] == 47)
    ok &= (year >= _MIN_YEAR) & (year <= _MAX_YEAR) & (month >= 1) & (month <= 12) & (day >= 1)
    ok &= day <= days_in_month(year, month)
    return np.where(ok, days_from_civil(year, month, day), 0), ok


def _parse_clock_words(word: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`HH:MM` tokens given as their first little-endian uint64 word → minutes after midnight and a
    validity mask (the bytes after a 5-byte token are never looked at)."""
    digit = [((word >> np.uint64(8 * i)) & np.uint64(0xFF)).astype(np.int64) - _DIGIT0 for i in (0, 1, 3, 4)]
    colon = (word >> np.uint64(16)) & np.uint64(0xFF)
    ok = (length == 5) & (colon == 58)
    for d in digit:
        ok &= (d >= 0) & (d <= 9)
    hour = digit[0] * 10 + digit[1]
    minute = digit[2] * 10 + digit[3]
    ok &= (hour <= 23) & (minute <= 59)
    return np.where(ok, hour * 60 + minute, 0), ok


def _factorize_rows(words: list[np.ndarray], hash_above: int) -> tuple[np.ndarray, np.ndarray]:
    """Codes of rows given as uint64 word columns, such that equal codes mean equal rows, and the
    first row of each code.

    Runs of equal consecutive rows share a code (a comparison with the previous row: cheap, and files
    are sorted by time, so a date repeats for a whole day). When there are more than `hash_above`
    runs, rows are hashed instead (pandas.factorize, one word at a time), so that equal rows anywhere
    share a code."""
    n = words[0].size
    change = np.zeros(n, dtype=bool)  # (all-True would make every row a run of its own)
    change[:1] = True
    for w in words:
        change[1:] |= w[1:] != w[:-1]
    run_first = np.flatnonzero(change)
    if run_first.size <= hash_above:
        return np.cumsum(change) - 1, run_first
    codes, _ = pd.factorize(words[0])
    for w in words[1:]:
        word_codes, uniq = pd.factorize(w)
        codes, _ = pd.factorize(codes * len(uniq) + word_codes)
    first = np.full(int(codes.max()) + 1, -1, dtype=np.int64)
    first[codes[::-1]] = np.arange(n - 1, -1, -1)
    return codes, first


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")
