"""Cluster factory: a Dask `distributed` client for the run config's `cluster` section.

`local` starts a LocalCluster of processes; `address` connects to a running scheduler (any Kubernetes,
Coiled or hand-made cluster); `kubernetes` and `coiled` create one (optional extras, see deploy/).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from somocloud.config import ClusterConfig

log = logging.getLogger(__name__)

ClusterFactory = Callable[[ClusterConfig], Any]
FACTORIES: dict[str, ClusterFactory] = {}


def register(kind: str) -> Callable[[ClusterFactory], ClusterFactory]:
    def deco(fn: ClusterFactory) -> ClusterFactory:
        FACTORIES[kind] = fn
        return fn

    return deco


@register("local")
def _local(cfg: ClusterConfig) -> Any:
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=cfg.n_workers,
        threads_per_worker=cfg.threads_per_worker,
        memory_limit=cfg.memory_limit,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    return Client(cluster)


@register("address")
def _address(cfg: ClusterConfig) -> Any:
    from distributed import Client

    return Client(cfg.address)


@register("kubernetes")
def _kubernetes(cfg: ClusterConfig) -> Any:
    try:
        from dask_kubernetes.operator import KubeCluster
    except ImportError as exc:
        raise RuntimeError(
            "cluster.kind=kubernetes needs the k8s extra: pip install 'somocloud[k8s]'"
        ) from exc
    from distributed import Client

    cluster = KubeCluster(name="somocloud", n_workers=cfg.n_workers)
    return Client(cluster)


@register("coiled")
def _coiled(cfg: ClusterConfig) -> Any:
    try:
        import coiled
    except ImportError as exc:
        raise RuntimeError(
            "cluster.kind=coiled needs the coiled extra: pip install 'somocloud[coiled]'"
        ) from exc
    cluster = coiled.Cluster(n_workers=cfg.n_workers)
    return cluster.get_client()


def make_client(cfg: ClusterConfig) -> Any:
    """A `distributed.Client` for the configured cluster kind."""
    log.info("starting Dask cluster: %s", cfg.kind if cfg.kind != "local" else f"local x{cfg.n_workers}")
    return FACTORIES[cfg.kind](cfg)
