"""Hrefs written into published documents: relative between local files, absolute URLs otherwise."""

from __future__ import annotations

import os
import posixpath

from somocloud import stores


def _local_path(url: str) -> str | None:
    if stores.protocol(url) != "file":
        return None
    return os.path.abspath(url.removeprefix("file://"))


def href_from(base_dir: str, target: str) -> str:
    """`target` as a document in folder `base_dir` should name it.

    Between two local paths the href is relative (so a published folder can be moved or served as a
    whole); anything else stays the absolute URL, which is what remote readers need."""
    base, dest = _local_path(base_dir), _local_path(target)
    if base is None or dest is None:
        return target
    rel = os.path.relpath(dest, base).replace(os.sep, "/")
    return rel if rel.startswith("../") else "./" + rel


def parent(url: str) -> str:
    """The folder holding a file URL or path."""
    if stores.protocol(url) == "file" and "://" not in url:
        return os.path.dirname(os.path.abspath(url))
    return posixpath.dirname(url.rstrip("/"))
