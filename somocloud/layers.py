"""The product's soil layers and the model's input names (SoMo.ml v1 input set)."""

from __future__ import annotations

import numpy as np

DEPTHS = np.array([0.05, 0.20, 0.40])
"""Layer mid-depths in m (0-10, 10-30, 30-50 cm)."""
DEPTH_BOUNDS = np.array([[0.0, 0.1], [0.1, 0.3], [0.3, 0.5]])
"""Layer bounds in m."""
N_LAYERS = len(DEPTHS)

FORCING_VARIABLES = ("t2m", "tp", "q", "snr", "ssrd", "skt")
"""Canonical daily forcing variables in the forcing cube."""
DYNAMIC_INPUTS = ("log_tp", "t2m", "snr", "ssrd", "q", "skt")
"""Model dynamic inputs, in SoMo.ml order (`log_tp` = ln(1 + tp))."""
STATIC_INPUTS = (
    "elev_mean", "elev_std", "p_mean", "aridity", "clay", "sand", "silt",
    "porosity_top", "porosity_mid", "veg_type",
)  # fmt: skip
"""Model static inputs, in SoMo.ml order (ETOPOavg, ETOPOsd, tp, arid, clay, sand, silt, poro_top, poro_mid, domveg)."""
SIMULATED_PREFIX = "sm_layer"
"""Dynamic input `sm_layer<j>`: the simulated soil moisture (ensemble mean, m3 m-3) of layer j, fed to the
layers below it (the layer cascade)."""


def layer_label(index: int) -> str:
    """'0-10cm', '10-30cm', '30-50cm' for layer index 0, 1, 2 (evaluation tables and lookback curves)."""
    a, b = DEPTH_BOUNDS[index]
    return f"{round(a * 100)}-{round(b * 100)}cm"


def simulated_input(layer: int) -> str:
    """The dynamic input name of layer `layer`'s (1-based) simulated soil moisture."""
    return f"{SIMULATED_PREFIX}{layer}"


def simulated_layer(name: str) -> int | None:
    """The 1-based layer whose simulation the input `name` is, or None for a forcing-derived input."""
    suffix = name.removeprefix(SIMULATED_PREFIX)
    return int(suffix) if suffix != name and suffix.isdigit() else None


def layer_dynamic_inputs(layer: int, cascade: bool) -> tuple[str, ...]:
    """Dynamic inputs of layer `layer` (1-based): the forcing inputs, then with the cascade the simulated
    soil moisture of every layer above (SoMo.ml: layers 2 and 3 take the layers above)."""
    above = tuple(simulated_input(j) for j in range(1, layer)) if cascade else ()
    return (*DYNAMIC_INPUTS, *above)


REFERENCE_VARIABLES = ("swvl1", "swvl2", "swvl3")
"""Reference soil moisture layers (ERA5 0-7, 7-28, 28-100 cm)."""
REFERENCE_BOUNDS = np.array([[0.0, 0.07], [0.07, 0.28], [0.28, 1.0]])


def reference_weights() -> np.ndarray:
    """(target layer, reference layer) weights: overlap in depth of each pair, rows summing to 1."""
    w = np.zeros((N_LAYERS, len(REFERENCE_VARIABLES)))
    for k, (a, b) in enumerate(DEPTH_BOUNDS):
        for r, (c, d) in enumerate(REFERENCE_BOUNDS):
            w[k, r] = max(0.0, min(b, d) - max(a, c))
        w[k] /= w[k].sum()
    return w
