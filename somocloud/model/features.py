"""Model inputs: canonical forcing/static fields → input arrays, global standardisation, windows.

Shared by `train` and `predict` so both build inputs the same way."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _transform(name: str, fields: Mapping[str, np.ndarray]) -> np.ndarray:
    if name == "log_tp":  # SoMo.ml feeds precipitation as ln(1 + tp[mm/day])
        return np.log1p(np.clip(np.asarray(fields["tp"], dtype="float32"), 0.0, None))
    if name not in fields:
        raise KeyError(f"model input {name!r} is not among the available fields {sorted(fields)}")
    return np.asarray(fields[name], dtype="float32")


def stack_inputs(fields: Mapping[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    """Stack named fields (each of the same shape) along a new last axis, applying input transforms."""
    return np.stack([_transform(n, fields) for n in names], axis=-1).astype("float32")


@dataclass
class Scaler:
    """Global mean and standard deviation per input name (fit on training data only)."""

    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)

    @classmethod
    def fit(cls, arrays: Mapping[str, np.ndarray]) -> Scaler:
        mean, std = {}, {}
        for name, arr in arrays.items():
            a = np.asarray(arr, dtype="float64")
            mean[name] = float(np.nanmean(a))
            s = float(np.nanstd(a))
            std[name] = s if s > 0 and np.isfinite(s) else 1.0  # constant inputs stay finite
        return cls(mean, std)

    def apply(self, x: np.ndarray, names: Sequence[str]) -> np.ndarray:
        """Standardise the last axis of `x`, whose entries are `names`."""
        m = np.array([self.mean[n] for n in names], dtype="float32")
        s = np.array([self.std[n] for n in names], dtype="float32")
        return ((x - m) / s).astype("float32")

    def to_dict(self) -> dict[str, Any]:
        return {"mean": dict(self.mean), "std": dict(self.std)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scaler:
        return cls(dict(data["mean"]), dict(data["std"]))


def window_view(x: Any, seq_length: int) -> Any:
    """(cells, time, features) torch tensor → (cells, time - seq_length + 1, seq_length, features) view.

    Window k covers steps k .. k + seq_length - 1 and predicts its last day; no copy is made."""
    return x.unfold(1, seq_length, 1).permute(0, 1, 3, 2)
