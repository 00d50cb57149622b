"""Stores named by URL: plain path, file://, s3://, memory://, opened through fsspec, xarray and zarr 3.

S3 endpoint and credentials come only from the environment (`AWS_ENDPOINT_URL` or
`SOMOCLOUD_S3_ENDPOINT_URL`, and botocore's usual `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/profile
chain) or from run-time storage options handed to `set_runtime_options`. Nothing here ever writes or logs
storage options.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import fsspec
import xarray as xr

# Zarr 3 warns on every consolidated write that consolidated metadata is not in the v3 spec; we rely on
# it deliberately (one metadata read per open on object stores), so the warning is noise.
warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")


class StoreError(ValueError):
    """A store that cannot be used as an input: the message names the store and the variable or coordinate."""


class StoreAccessError(PermissionError):
    """The credentials in use may not write (or read) a store; the message names the store."""


ENDPOINT_ENV = ("SOMOCLOUD_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")

# botocore's DEBUG lines print signed requests, session token included: they never pass, whatever the
# process's log level (`--log-level DEBUG` must not put credentials into logs).
for _name in ("botocore", "aiobotocore"):
    if logging.getLogger(_name).level < logging.INFO:  # NOTSET would inherit DEBUG from the root
        logging.getLogger(_name).setLevel(logging.INFO)

# Run-time options per protocol (e.g. {"s3": {"anon": True}}), set by API users; process-local.
_RUNTIME_OPTIONS: dict[str, dict[str, Any]] = {}


def set_runtime_options(options: Mapping[str, Mapping[str, Any]]) -> None:
    """Set run-time storage options per protocol. They live in memory only, never in outputs."""
    _RUNTIME_OPTIONS.clear()
    _RUNTIME_OPTIONS.update({k: dict(v) for k, v in options.items()})


def runtime_options() -> dict[str, dict[str, Any]]:
    """The run-time options, to hand to a worker process (`set_runtime_options` there)."""
    return {k: dict(v) for k, v in _RUNTIME_OPTIONS.items()}


def protocol(url: str) -> str:
    """'s3', 'memory' or 'file' for a URL or a plain path."""
    if "://" not in url:
        return "file"
    proto = url.split("://", 1)[0]
    return {"s3a": "s3"}.get(proto, proto)


def storage_options(url: str) -> dict[str, Any]:
    """fsspec storage options for `url`: the S3 endpoint from the environment plus run-time options."""
    proto = protocol(url)
    opts: dict[str, Any] = {}
    if proto == "s3":
        endpoint = next((os.environ[v] for v in ENDPOINT_ENV if os.environ.get(v)), None)
        if endpoint:
            opts["endpoint_url"] = endpoint
    opts.update(_RUNTIME_OPTIONS.get(proto, {}))
    return opts


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and the path inside it."""
    fs, path = fsspec.core.url_to_fs(url, **storage_options(url))
    return fs, path


def join(url: str, *parts: str) -> str:
    """Join path parts onto a URL with '/'."""
    if protocol(url) == "file" and "://" not in url:
        return os.path.join(url, *parts)
    return posixpath.join(url.rstrip("/"), *parts)


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    return bool(fs.exists(path))


def read_bytes(url: str) -> bytes:
    fs, path = filesystem(url)
    with fs.open(path, "rb") as f:
        return bytes(f.read())


def write_bytes(url: str, data: bytes) -> None:
    """Write a whole object (local parents are created)."""
    fs, path = filesystem(url)
    parent = posixpath.dirname(path)
    if parent and protocol(url) in ("file", "memory"):
        fs.makedirs(parent, exist_ok=True)
    with fs.open(path, "wb") as f:
        f.write(data)


def read_text(url: str) -> str:
    return read_bytes(url).decode("utf-8")


def write_text(url: str, text: str) -> None:
    write_bytes(url, text.encode("utf-8"))


def read_json(url: str) -> Any:
    return json.loads(read_text(url))


def write_json(url: str, data: Any) -> None:
    write_text(url, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def remove(url: str) -> None:
    """Remove an object or a whole prefix; no error if absent."""
    fs, path = filesystem(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def list_files(url: str, suffix: str = "") -> list[str]:
    """Every file below `url` (recursively) whose name ends with `suffix`, as URLs, sorted."""
    fs, path = filesystem(url)
    if not fs.exists(path):
        return []
    found = fs.find(path)
    proto = protocol(url)
    out = []
    for p in sorted(found):
        if not p.endswith(suffix):
            continue
        if proto == "file":
            out.append(p if "://" not in url else f"file://{p}")
        else:
            out.append(f"{proto}://{p.lstrip('/')}")
    return out


def zarr_kwargs(url: str) -> dict[str, Any]:
    """`storage_options=` for xarray/zarr calls on `url` (zarr refuses them for local paths)."""
    return {} if protocol(url) == "file" else {"storage_options": storage_options(url)}


def zarr_url(url: str) -> str:
    """The URL as zarr wants it: local paths without `file://` (zarr then creates folders itself)."""
    return url.removeprefix("file://") if protocol(url) == "file" else url


def check_variables(
    ds: xr.Dataset,
    url: str,
    names: Iterable[str],
    dims: Iterable[str],
    units: Mapping[str, str] | None = None,
) -> None:
    """`StoreError` naming the store and variable unless every one of `names` is in `ds` with the
    dimensions `dims` (in any order) and, where `units` names it, that `units` attribute."""
    want = set(dims)
    for name in names:
        if name not in ds.data_vars:
            raise StoreError(f"{url}: variable {name!r} is missing (have {sorted(map(str, ds.data_vars))})")
        if set(map(str, ds[name].dims)) != want:
            raise StoreError(
                f"{url}: variable {name!r} has dims {ds[name].dims}, expected {tuple(sorted(want))}"
            )
        have = ds[name].attrs.get("units")
        if units and name in units and have != units[name]:
            raise StoreError(f"{url}: variable {name!r} has units {have!r}, expected {units[name]!r}")


def open_zarr(url: str, **kwargs: Any) -> xr.Dataset:
    """Open a Zarr store lazily: dask chunks of one stored object (`write_unit_chunks`) unless `chunks`
    is given (`chunks=None`: no dask)."""
    try:
        if "chunks" not in kwargs:
            plain = xr.open_zarr(zarr_url(url), **zarr_kwargs(url), chunks=None)
            kwargs["chunks"] = write_unit_chunks(plain) or {}
        return xr.open_zarr(zarr_url(url), **zarr_kwargs(url), **kwargs)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"no Zarr store at {url}") from exc


def write_unit_chunks(ds: xr.Dataset) -> dict[str, int]:
    """Dask chunks of one stored object per dimension: the shard where variables are sharded, else the
    chunk. xarray's default would be the inner chunks of a shard: far more, far smaller dask tasks, each
    fetching the shard's index again (benchmarks/bench_product_read.py)."""
    chunks: dict[str, int] = {}
    for var in sorted(ds.data_vars.values(), key=lambda v: -v.ndim):  # the data cubes decide first
        unit = var.encoding.get("shards") or var.encoding.get("chunks")
        if unit:
            for dim, size in zip(var.dims, unit, strict=True):
                chunks.setdefault(str(dim), int(size))
    return chunks


def write_zarr(ds: xr.Dataset, url: str, **kwargs: Any) -> Any:
    """Write a dataset as a Zarr 3 store (consolidated). `mode` defaults to 'w' (replace)."""
    kwargs.setdefault("mode", "w")
    kwargs.setdefault("zarr_format", 3)
    kwargs.setdefault("consolidated", True)
    return ds.to_zarr(zarr_url(url), **zarr_kwargs(url), **kwargs)


def zarr_store(url: str, read_only: bool = False) -> Any:
    """A zarr 3 store object for `url` (local paths as LocalStore, everything else through fsspec)."""
    from zarr.storage import FsspecStore, LocalStore

    if protocol(url) == "file":
        return LocalStore(url.removeprefix("file://"), read_only=read_only)
    return FsspecStore.from_url(url, storage_options=storage_options(url), read_only=read_only)


def zarr_attrs(url: str) -> dict[str, Any]:
    """The root attributes of a Zarr store, read from its metadata only."""
    import zarr

    group = zarr.open_group(zarr_store(url, read_only=True), mode="r")
    return dict(group.attrs)


def update_zarr_attrs(
    url: str, attrs: Mapping[str, Any], consolidate: bool = True, remove: Sequence[str] = ()
) -> None:
    """Merge `attrs` into a Zarr store's root attributes (dropping the keys in `remove`) and re-consolidate
    its metadata."""
    import zarr

    store = zarr_store(url)
    group = zarr.open_group(store, mode="r+")
    if remove:
        kept = {k: v for k, v in group.attrs.asdict().items() if k not in remove}
        group.attrs.put(kept | dict(attrs))
    else:
        group.attrs.update(dict(attrs))
    if consolidate:
        zarr.consolidate_metadata(store)


class Markers:
    """One small marker object per finished task under `<base>/<task_id>.json`.

    A marker is written after the task's data, so its presence means the task's output is complete."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def url(self, task_id: str) -> str:
        return join(self.base_url, f"{task_id}.json")

    def done(self, task_id: str) -> bool:
        return exists(self.url(task_id))

    def mark(self, task_id: str, info: Mapping[str, Any] | None = None) -> None:
        write_json(self.url(task_id), {"task": task_id, **(info or {})})

    def finished(self) -> set[str]:
        return {posixpath.basename(u)[: -len(".json")] for u in list_files(self.base_url, ".json")}

    def clear(self) -> None:
        remove(self.base_url)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.finished()))


def markers_for(store_url: str) -> Markers:
    """The markers of the tasks that write `store_url` (a sibling prefix, so the store stays pure Zarr)."""
    return Markers(store_url.rstrip("/") + ".progress")


WRITE_PROBE = ".somocloud-write-probe"


def check_writable(url: str) -> None:
    """Fail plainly, before any work, when this process's credentials cannot write under `url`.

    Writes and removes one small probe object next to the store (S3 only: local and memory stores report
    their own errors). Raises `StoreAccessError` naming the store; never echoes a key."""
    if protocol(url) != "s3":
        return
    probe = url.rstrip("/") + WRITE_PROBE
    try:
        write_bytes(probe, b"")
        remove(probe)
    except PermissionError as exc:
        raise StoreAccessError(
            f"{url}: access denied when writing. The S3 credentials in use can not write here (read-only "
            "credentials?); give this step credentials allowed to put and delete objects under this prefix"
            f" ({type(exc).__name__}: {_scrub(str(exc))})"
        ) from None


def _scrub(message: str) -> str:
    """`message` without any storage-option value (endpoint, keys) of this process."""
    for value in (*[os.environ.get(v) for v in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")],
                  *[v for opts in _RUNTIME_OPTIONS.values() for v in opts.values()]):  # fmt: skip
        if isinstance(value, str) and value:
            message = message.replace(value, "***")
    return message
