"""What an in-situ store holds, and reading its files, including members of zip archives in place.

The store (`ismn` in the config) may be a folder, a single `.zip` archive, or a single file, on any
fsspec store (local path, file://, s3://, memory://). A folder is searched recursively; a zip
archive (the store itself or any `.zip` inside the folder) is read through `zipfile` on the fsspec
file object, so members are read where they lie (ranged reads on object stores) and nothing is
unpacked to disk. By name, files are:

* station data: `*.stm` (ISMN text layouts) and `*.parquet` (tables such as the USCRN daily file);
* station metadata: `*_static_variables.csv`, used for the `.stm` files in the same folder;
* download metadata: `Metadata.xml`;
* anything else (ISMN's `python_metadata/`, readme files, ...) is ignored.

An archive that cannot be opened is quarantined as a whole; a member that cannot be read (corrupt
data, CRC error, encryption, unsupported compression) only that member. A zip inside a zip is not
opened (quarantined with that reason).
"""

from __future__ import annotations

import posixpath
import zipfile
import zlib
from dataclasses import dataclass, field
from types import TracebackType
from typing import IO, Any

from somocloud import stores
from somocloud.insitu.metadata import DATASET_METADATA, STATIC_SUFFIX
from somocloud.insitu.model import Rejection

DATA_SUFFIXES = (".stm", ".parquet")
"""Name endings (lower case) of station data files."""
ARCHIVE_SUFFIX = ".zip"
MEMBER_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    RuntimeError,
    NotImplementedError,
    ValueError,
)
"""What reading a damaged, encrypted or unsupported zip member raises."""


@dataclass(frozen=True)
class SourceFile:
    """One file of the store: a plain file, or a member of a zip archive.

    Attributes:
        url: The file's URL, or the URL of the zip archive that holds it.
        name: How reports and the `source_file` coordinate name it: the path relative to the store;
            a member as `<archive path>/<member path>` (for a store that is itself an archive:
            `<archive file name>/<member path>`).
        member: Path of the member inside the archive; None for a plain file.
        static: The `*_static_variables.csv` of the same folder, if there is one.
    """

    url: str
    name: str
    member: str | None = None
    static: SourceFile | None = None


@dataclass
class Inventory:
    """The store's files by kind, and what could not even be listed.

    Attributes:
        data: Station data files, sorted by name (members of one archive stay together).
        datasets: `Metadata.xml` files.
        rejected: Archives that could not be opened, nested archives.
        ignored: How many files were neither data nor metadata.
    """

    data: list[SourceFile] = field(default_factory=list)
    datasets: list[SourceFile] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    ignored: int = 0


def _kind(path: str) -> str:
    base = posixpath.basename(path)
    low = base.lower()
    if low.endswith(STATIC_SUFFIX):
        return "static"
    if base == DATASET_METADATA:
        return "dataset"
    if low.endswith(ARCHIVE_SUFFIX):
        return "archive"
    if low.endswith(DATA_SUFFIXES):
        return "data"
    return "other"


def _classify(entries: list[tuple[str, str, str | None]], inv: Inventory) -> None:
    """Sort (url, name, member) entries into the inventory; static CSVs attach to data files of the
    same folder (the first CSV by name if a folder has several, as `ismn` does)."""
    statics: dict[str, SourceFile] = {}
    for url, name, member in sorted(entries, key=lambda e: e[1]):
        if _kind(name) == "static":
            statics.setdefault(posixpath.dirname(name), SourceFile(url, name, member))
    for url, name, member in sorted(entries, key=lambda e: e[1]):
        kind = _kind(name)
        if kind == "data":
            # Static variables describe ISMN stations: only ISMN station files get them.
            static = statics.get(posixpath.dirname(name)) if name.lower().endswith(".stm") else None
            inv.data.append(SourceFile(url, name, member, static))
        elif kind == "dataset":
            inv.datasets.append(SourceFile(url, name, member))
        elif kind == "archive" and member is not None:
            inv.rejected.append(Rejection(name, None, "zip archive inside a zip archive is not read"))
        elif kind == "other":
            inv.ignored += 1


def _archive_entries(url: str, name: str, inv: Inventory) -> list[tuple[str, str, str | None]]:
    """The members of a zip archive as (archive url, name, member); a bad archive is quarantined."""
    try:
        fs, path = stores.filesystem(url)
        with fs.open(path, "rb") as f, zipfile.ZipFile(f) as zf:
            members = [i.filename for i in zf.infolist() if not i.is_dir()]
    except MEMBER_ERRORS as exc:
        inv.rejected.append(Rejection(name, None, f"not a readable zip archive: {type(exc).__name__}: {exc}"))
        return []
    return [(url, f"{name}/{m}", m) for m in members]


def inventory(store_url: str) -> Inventory:
    """Everything under the store (a folder, a `.zip` archive or one file), classified by name.

    Raises:
        FileNotFoundError: nothing exists at `store_url`.
    """
    fs, root = stores.filesystem(store_url)
    if not fs.exists(root):
        raise FileNotFoundError(f"no in-situ data at {store_url}")
    inv = Inventory()
    if not fs.isdir(root):
        base = posixpath.basename(root.rstrip("/"))
        if _kind(base) == "archive":
            _classify(_archive_entries(store_url, base, inv), inv)
        else:
            # A single file: its folder's static-variables CSV still applies.
            entries: list[tuple[str, str, str | None]] = [(store_url, base, None)]
            pattern = posixpath.join(posixpath.dirname(root), "*" + STATIC_SUFFIX)
            for path in sorted(fs.glob(pattern))[:1]:
                entries.append((_url_for(store_url, path), posixpath.basename(path), None))
            _classify(entries, inv)
        return inv
    entries = []
    for url in stores.list_files(store_url):
        _, path = stores.filesystem(url)
        name = posixpath.relpath(path, root)
        if _kind(name) == "archive":
            entries += _archive_entries(url, name, inv)
        else:
            entries.append((url, name, None))
    _classify(entries, inv)
    return inv


def _url_for(like: str, path: str) -> str:
    """The URL of `path` on the same filesystem as the URL `like`."""
    proto = stores.protocol(like)
    if proto == "file":
        return path if "://" not in like else f"file://{path}"
    return f"{proto}://{path.lstrip('/')}"


class ArchiveCache:
    """Open zip archives, kept open while a batch of members is read (one open per archive)."""

    def __init__(self) -> None:
        self._open: dict[str, tuple[IO[bytes], zipfile.ZipFile]] = {}

    def zip(self, url: str) -> zipfile.ZipFile:
        if url not in self._open:
            fs, path = stores.filesystem(url)
            f = fs.open(path, "rb")
            try:
                self._open[url] = (f, zipfile.ZipFile(f))
            except Exception:
                f.close()
                raise
        return self._open[url][1]

    def close(self) -> None:
        for f, zf in self._open.values():
            zf.close()
            f.close()
        self._open.clear()

    def __enter__(self) -> ArchiveCache:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


def read_source(src: SourceFile, archives: ArchiveCache | None = None) -> bytes:
    """The bytes of a plain file or of an archive member (read from the archive in place).

    Raises:
        OSError, zipfile.BadZipFile, zlib.error, ...: see `MEMBER_ERRORS`.
    """
    if src.member is None:
        return stores.read_bytes(src.url)
    if archives is None:
        with ArchiveCache() as cache:
            return cache.zip(src.url).read(src.member)
    return archives.zip(src.url).read(src.member)


def describe_error(exc: BaseException) -> str:
    """Short reason for a file that could not be read (never includes storage options)."""
    detail: Any = str(exc)
    return f"cannot read file: {type(exc).__name__}" + (f": {detail}" if detail else "")
