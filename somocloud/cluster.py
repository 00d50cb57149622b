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


def worker_environ() -> dict[str, Any]:
    """The environment nannies give new workers: Dask's defaults minus `MALLOC_TRIM_THRESHOLD_`.

    Setting that variable at all switches off glibc's dynamic mmap threshold, so every large tensor
    allocation becomes an mmap/munmap pair: torch training ran 4-5x slower in workers (measured on the
    demo, 94 vs 475 ms per batch). Thread caps (OMP/MKL/OpenBLAS = 1 per worker thread) are kept."""
    import dask

    env = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    env.pop("MALLOC_TRIM_THRESHOLD_", None)
    return env


@register("local")
def _local(cfg: ClusterConfig) -> Any:
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.nanny.pre-spawn-environ": worker_environ()}):
        cluster = LocalCluster(
            n_workers=cfg.n_workers,
            threads_per_worker=cfg.threads_per_worker,
            memory_limit=cfg.memory_limit,
            processes=True,
            dashboard_address=":0",  # a free port: several local clusters may run side by side
            silence_logs=logging.ERROR,
        )
    return Client(cluster, set_as_default=False)


@register("address")
def _address(cfg: ClusterConfig) -> Any:
    from distributed import Client

    return Client(cfg.address, set_as_default=False)


@register("kubernetes")
def _kubernetes(cfg: ClusterConfig) -> Any:
    try:
        from dask_kubernetes.operator import KubeCluster
    except ImportError as exc:
        raise RuntimeError(
            "cluster.kind=kubernetes needs the k8s extra: pip install 'somocloud[k8s]'"
        ) from exc
    from distributed import Client

    cluster = KubeCluster(**({"name": "somocloud", "n_workers": cfg.n_workers} | cfg.options))
    return Client(cluster, set_as_default=False)


@register("coiled")
def _coiled(cfg: ClusterConfig) -> Any:
    try:
        import coiled
    except ImportError as exc:
        raise RuntimeError(
            "cluster.kind=coiled needs the coiled extra: pip install 'somocloud[coiled]'"
        ) from exc
    cluster = coiled.Cluster(**({"n_workers": cfg.n_workers} | cfg.options))
    return cluster.get_client()


def make_client(cfg: ClusterConfig) -> Any:
    """A `distributed.Client` for the configured cluster kind.

    The client is not made dask's default scheduler: steps send work to it explicitly
    (`client.map/submit/compute`), and small reads in the driver stay in the driver (a `memory://`
    store, for one, exists only in the process that wrote it)."""
    log.info("starting Dask cluster: %s", cfg.kind if cfg.kind != "local" else f"local x{cfg.n_workers}")
    return FACTORIES[cfg.kind](cfg)
