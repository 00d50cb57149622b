"""The steps of the data flow, in run order: verb → entry function ("module:function") and help.

Every entry has the signature `entry(cfg: RunConfig, ctx: Context) -> dict[str, str]` and returns the
URLs of what it wrote. Modules are imported only when their verb runs, so `--help` stays fast."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StepSpec:
    entry: str
    help: str
    writes: tuple[str, ...] = ()
    """The stores (config names) the step writes: checked writable before any work starts."""

    def load(self) -> Callable[..., dict[str, str]]:
        module, func = self.entry.split(":")
        fn: Callable[..., dict[str, str]] = getattr(importlib.import_module(module), func)
        return fn


SYNTHETIC = StepSpec(
    "somocloud.synthetic:build_world",
    "build the synthetic world (hourly ERA5, statics, DEM, truth, ISMN files)",
    writes=("forcing_source", "static_inputs", "dem", "ismn", "truth", "coarse_targets"),
)

STEPS: dict[str, StepSpec] = {
    "forcing": StepSpec(
        "somocloud.forcing:build_forcing",
        "hourly ERA5 Zarr → daily pixel-chunked forcing cube and reference soil moisture",
        writes=("forcing", "reference_sm"),
    ),
    "statics": StepSpec(
        "somocloud.statics:build_statics",
        "static features on the run grid (elevation, aridity, texture, porosity, ...)",
        writes=("statics",),
    ),
    "ingest": StepSpec(
        "somocloud.insitu:ingest", "ISMN station files → quality-controlled daily series", writes=("insitu",)
    ),
    "targets": StepSpec(
        "somocloud.targets:build_targets",
        "daily series → training targets rescaled to the reference soil moisture",
        writes=("targets",),
    ),
    "train": StepSpec(
        "somocloud.train:train",
        "train the EA-LSTM members of every layer → model artifact",
        writes=("model",),
    ),
    "predict": StepSpec(
        "somocloud.predict:predict", "run the models over every land cell → product Zarr", writes=("product",)
    ),
    "evaluate": StepSpec(
        "somocloud.evaluate:evaluate",
        "skill at held-out stations (r, anomaly r, ubRMSD)",
        writes=("evaluation",),
    ),
    "report": StepSpec(
        "somocloud.report:report",
        "validation report: one HTML page with figures and provenance",
        writes=("report",),
    ),
    "publish": StepSpec(
        "somocloud.publish:publish",
        "STAC collection and Intake catalog of the finished product",
        writes=("stac", "catalog"),
    ),
}

RUN_ORDER: list[str] = list(STEPS)

TOOLS: dict[str, StepSpec] = {
    "extend": StepSpec(
        "somocloud.extend:extend",
        "add days to the finished product up to --until as new forcing arrives (resumable; republishes)",
        writes=("product", "forcing", "reference_sm"),
    ),
    "export-netcdf": StepSpec(
        "somocloud.publish.netcdf:export_netcdf",
        "the complete product → CF-1.11 NetCDF files, one per layer and year (<prefix>_layer<k>_<YYYY>.nc)",
        writes=("netcdf",),
    ),
    "import-somoml": StepSpec(
        "somocloud.model.somoml_v1:import_step",
        "import the published SoMo.ml v1 checkpoint and scalers → model artifact (layer 1 only)",
        writes=("model",),
    ),
}
"""Verbs outside the data flow (not run by `run`/`demo`), with the same entry signature."""


def spec(name: str) -> StepSpec:
    """The step or tool of verb `name`."""
    if name == "synthetic":
        return SYNTHETIC
    return TOOLS[name] if name in TOOLS else STEPS[name]


def entry(name: str) -> Callable[..., Any]:
    return spec(name).load()


def check_outputs_writable(cfg: Any, names: Sequence[str]) -> None:
    """Before any work: every store the named steps write must be writable with the credentials in use
    (`stores.check_writable`; S3 only), so read-only credentials fail at once with a plain message."""
    from somocloud import stores

    for store in dict.fromkeys(w for name in names for w in spec(name).writes):
        stores.check_writable(cfg.store(store))
