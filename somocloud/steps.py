"""The steps of the data flow, in run order: verb → entry function ("module:function") and help.

Every entry has the signature `entry(cfg: RunConfig, ctx: Context) -> dict[str, str]` and returns the
URLs of what it wrote. Modules are imported only when their verb runs, so `--help` stays fast."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StepSpec:
    entry: str
    help: str

    def load(self) -> Callable[..., dict[str, str]]:
        module, func = self.entry.split(":")
        fn: Callable[..., dict[str, str]] = getattr(importlib.import_module(module), func)
        return fn


SYNTHETIC = StepSpec(
    "somocloud.synthetic:build_world",
    "build the synthetic world (hourly ERA5, statics, DEM, truth, ISMN files)",
)

STEPS: dict[str, StepSpec] = {
    "forcing": StepSpec(
        "somocloud.forcing:build_forcing",
        "hourly ERA5 Zarr → daily pixel-chunked forcing cube and reference soil moisture",
    ),
    "statics": StepSpec(
        "somocloud.statics:build_statics",
        "static features on the run grid (elevation, aridity, texture, porosity, ...)",
    ),
    "ingest": StepSpec("somocloud.insitu:ingest", "ISMN station files → quality-controlled daily series"),
    "targets": StepSpec(
        "somocloud.targets:build_targets",
        "daily series → training targets rescaled to the reference soil moisture",
    ),
    "train": StepSpec("somocloud.train:train", "train the EA-LSTM members of every layer → model artifact"),
    "predict": StepSpec("somocloud.predict:predict", "run the models over every land cell → product Zarr"),
    "evaluate": StepSpec("somocloud.evaluate:evaluate", "skill at held-out stations (r, anomaly r, ubRMSD)"),
    "report": StepSpec(
        "somocloud.report:report", "validation report: one HTML page with figures and provenance"
    ),
    "publish": StepSpec(
        "somocloud.publish:publish", "STAC collection and Intake catalog of the finished product"
    ),
}

RUN_ORDER: list[str] = list(STEPS)

TOOLS: dict[str, StepSpec] = {
    "export-netcdf": StepSpec(
        "somocloud.publish.netcdf:export_netcdf",
        "the complete product → CF-1.11 NetCDF files, one per layer and year (<prefix>_layer<k>_<YYYY>.nc)",
    ),
    "import-somoml": StepSpec(
        "somocloud.model.somoml_v1:import_step",
        "import the published SoMo.ml v1 checkpoint and scalers → model artifact (layer 1 only)",
    ),
}
"""Verbs outside the data flow (not run by `run`/`demo`), with the same entry signature."""


def entry(name: str) -> Callable[..., Any]:
    if name == "synthetic":
        return SYNTHETIC.load()
    if name in TOOLS:
        return TOOLS[name].load()
    return STEPS[name].load()
