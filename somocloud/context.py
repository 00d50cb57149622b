"""What a step needs at run time besides the config: the Dask client, progress display, task selection.

Nothing in a Context is ever written to an output."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from somocloud.config import ClusterConfig

log = logging.getLogger(__name__)

POLL_S = 5.0
"""Seconds between two looks of a part waiting for part 1."""


@dataclass
class Context:
    """Run-time state shared by the steps of one invocation."""

    show_progress: bool = True
    """Print live progress lines for distributed work."""
    parts: tuple[int, int] | None = None
    """`--parts i/N` (1-based): run only the i-th of N shares of a step's tasks, in this process."""
    client: Any = None
    """A `distributed.Client`; created on first use from the config's cluster section."""
    _owns_client: bool = field(default=False, repr=False)

    def dask(self, cluster: ClusterConfig) -> Any:
        """The Dask client, starting the configured cluster on first use."""
        if self.client is None:
            from somocloud.cluster import make_client

            self.client = make_client(cluster)
            self._owns_client = True
        return self.client

    def close(self) -> None:
        if self.client is not None and self._owns_client:
            cluster = getattr(self.client, "cluster", None)
            self.client.close()
            if cluster is not None:
                cluster.close()
        self.client = None
        self._owns_client = False

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def select_parts(items: list[Any], parts: tuple[int, int] | None) -> list[Any]:
    """The i-th of N interleaved shares of `items` (all of them when `parts` is None)."""
    if parts is None:
        return items
    i, n = parts
    return items[i - 1 :: n]


def wait_for_first_part(ready: Callable[[], bool], what: str, ctx: Context, timeout_s: float) -> None:
    """With `--parts i/N`, i > 1: wait until part 1 has made `what` (`ready()` true), polling; raise after
    `timeout_s`. Part 1 and runs without `--parts` return at once (they make it themselves)."""
    if ctx.parts is None or ctx.parts[0] == 1:
        return
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"part {ctx.parts[0]}/{ctx.parts[1]}: part 1 has not made {what} within {timeout_s:g} s; "
                "start or rerun part 1 (it writes it), then rerun this part"
            )
        log.info("part %d/%d: waiting for part 1 to make %s", *ctx.parts, what)
        time.sleep(min(POLL_S, max(deadline - time.monotonic(), 0.0)))
