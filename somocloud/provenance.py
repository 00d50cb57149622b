"""Provenance: the resolved config, package version and content hashes stamped into every output.

A content id is a sha256 over what made an output: the step, the resolved config and the content ids of
its inputs. Zarr outputs carry theirs in the `somocloud_content_id` attribute, so a downstream step can
chain it without reading data; raw inputs (files, folders) are hashed byte by byte.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from somocloud import __version__, stores
from somocloud.config import RunConfig

CONTENT_ID = "somocloud_content_id"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_json(obj: Any) -> str:
    return sha256_bytes(json.dumps(obj, sort_keys=True, default=str).encode())


def fingerprint(url: str) -> str:
    """A content id for any input: a Zarr store's own id (or its metadata hash), a file's or folder's bytes."""
    if stores.exists(stores.join(url, "zarr.json")):
        attrs = stores.zarr_attrs(url)
        if CONTENT_ID in attrs:
            return str(attrs[CONTENT_ID])
        return sha256_bytes(stores.read_bytes(stores.join(url, "zarr.json")))
    if stores.exists(stores.join(url, "manifest.json")):  # model artifacts
        return sha256_bytes(stores.read_bytes(stores.join(url, "manifest.json")))
    fs, path = stores.filesystem(url)
    if not fs.exists(path):
        raise FileNotFoundError(f"input {url} does not exist")
    if fs.isdir(path):
        h = hashlib.sha256()
        for f in sorted(fs.find(path)):
            h.update(f[len(path) :].encode())
            with fs.open(f, "rb") as fh:
                h.update(hashlib.sha256(fh.read()).digest())
        return h.hexdigest()
    with fs.open(path, "rb") as fh:
        return sha256_bytes(fh.read())


# Settings that change how a step runs, not what it makes: left out of content ids, so that e.g. a
# resumed prediction on another cluster or with another batch size keeps its finished tasks. Store URLs are
# left out too: the inputs' own content ids say what was read.
RUNTIME_ONLY = (
    "stores",
    "cluster",
    "predict.batch_windows",
    "predict.gpu",
    "predict.parts_wait_s",
    "evaluate.cells_per_batch",
    "ingest.parallel_min_files",
    "ingest.files_per_task",
    "forcing.variables.*.store",
    "import_somoml",
    "extend",
)


def _without_runtime(config: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(config))
    for dotted in RUNTIME_ONLY:
        _drop(out, dotted.split("."))
    return out


def _drop(node: Any, keys: list[str]) -> None:
    """Remove the key path `keys` from nested dicts; `*` matches every key at its level."""
    if not isinstance(node, dict):
        return
    head, *rest = keys
    children = list(node) if head == "*" else [head]
    for key in children:
        if not rest:
            node.pop(key, None)
        elif key in node:
            _drop(node[key], rest)


def provenance_attrs(cfg: RunConfig, step: str, inputs: Mapping[str, str]) -> dict[str, Any]:
    """Attributes for an output of `step`: version, resolved config, inputs with their content ids."""
    input_ids = {name: {"url": url, CONTENT_ID: fingerprint(url)} for name, url in sorted(inputs.items())}
    config = cfg.resolved()
    return {
        "somocloud_version": __version__,
        "somocloud_step": step,
        "somocloud_config": json.dumps(config, sort_keys=True),
        "somocloud_inputs": json.dumps(input_ids, sort_keys=True),
        CONTENT_ID: sha256_json(
            {
                "step": step,
                "config": _without_runtime(config),
                "inputs": {k: v[CONTENT_ID] for k, v in input_ids.items()},
                "version": __version__,
            }
        ),
    }
