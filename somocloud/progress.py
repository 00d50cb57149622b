"""Progress of a set of Dask futures: a live line (done/total, throughput, ETA) and a log line per part."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)


def track(
    futures: Iterable[Any],
    label: str,
    show: bool = True,
    on_result: Callable[[Any], None] | None = None,
) -> list[Any]:
    """Wait for `futures`, printing progress to stderr; returns results in completion order.

    Each finished part is logged with its result; exceptions propagate after the line is closed."""
    from distributed import as_completed

    futures = list(futures)
    if not futures:
        return []
    # The client is not the global default (cluster.make_client), so make it current for as_completed.
    with futures[0].client.as_current():
        return _track(futures, label, show, on_result, as_completed)


def _track(
    futures: list[Any],
    label: str,
    show: bool,
    on_result: Callable[[Any], None] | None,
    as_completed: Callable[..., Any],
) -> list[Any]:
    total = len(futures)
    start = time.monotonic()
    results = []
    live = show and sys.stderr.isatty()
    try:
        for i, fut in enumerate(as_completed(futures), start=1):
            result = fut.result()
            results.append(result)
            if on_result is not None:
                on_result(result)
            elapsed = time.monotonic() - start
            rate = i / elapsed if elapsed > 0 else float("inf")
            eta = (total - i) / rate if rate > 0 else 0.0
            line = f"[{label}] {i}/{total} parts, {rate:.2f} parts/s, ETA {eta:.0f}s"
            if live:
                sys.stderr.write("\r" + line)
                sys.stderr.flush()
            elif show:
                print(line, file=sys.stderr, flush=True)
            log.debug("[%s] part done: %s", label, result)
    finally:
        if live:
            sys.stderr.write("\n")
    return results
