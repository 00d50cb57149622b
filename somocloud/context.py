"""What a step needs at run time besides the config: the Dask client, progress display, task selection.

Nothing in a Context is ever written to an output."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from somocloud.config import ClusterConfig

log = logging.getLogger(__name__)


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
