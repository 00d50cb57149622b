"""Import of the published SoMo.ml v1 model (O & Orth 2021) into a somocloud model artifact.

The published release holds one trained EA-LSTM, the one of SoMo.ml's layer 0 (0-10 cm, our layer 1),
as a torch state dict, plus two CSV scalers. None of those files ship with somocloud (they carry no
licence); a user who has them turns them into an artifact that `predict` runs:

    somocloud import-somoml -c run.yaml --checkpoint model_epoch15.pt \\
        --dynamic-scaler scaler_ALL_layer0.dat --static-scaler scaler_ALL_statics.dat

The artifact (`stores.model`) has one layer at depth 0.05 m with one member; `predict` leaves the depths
0.20 and 0.40 m NaN (it logs that). The published model is seq-to-one with 365-day zero-state windows
(inference mode `exact`), hidden size 128, dropout 0.5 (inactive at inference), forget-gate bias
initialised at 5; `model.cascade` is not involved since only layer 1 exists. `predict` reads the forcing
from 364 days before `period.start`.

Inputs read (any `somocloud.stores` URL):

* checkpoint: a torch state dict with exactly `lstm.weight_ih` (6, 384), `lstm.weight_hh` (128, 384),
  `lstm.weight_sh` (10, 128), `lstm.bias` (384), `lstm.bias_s` (128), `fc.weight` (1, 128),
  `fc.bias` (1): the parameter names and layout of `somocloud.model.ealstm.EALSTM`, so it loads 1:1.
* scalers: CSV text; the first row is a header naming the variables, its first cell the (usually empty)
  label of the row-label column; each further row starts with its label: `aveK` holds the means, `stdK`
  the standard deviations. Columns are matched by name, in any order; extra columns and rows are ignored.
  The dynamic scaler has `log_tp, t2m, snr, ssrd, q, skt` and the target `sm` (m3 m-3); the static scaler
  `ETOPOavg, ETOPOsd, tp, arid, clay, sand, silt, poro_top, poro_mid, domveg`.

Assumption on precipitation: the dynamic scaler's `log_tp` column holds the statistics of
ln(1 + tp[mm day-1]), the model's first input (the published file names it `log_tp`). A file whose column
is named `tp` and has no `log_tp` column is read the same way, with `tp` taken as the statistics of
`log_tp` (no conversion; logged as a warning and recorded in `provenance.json`). In the static scaler `tp`
is the long-term mean precipitation, our `p_mean`.

Names and units (no value is converted; what could not be verified is recorded in `provenance.json`):

| SoMo.ml | somocloud | units (both) |
|---|---|---|
| `log_tp`, `t2m`, `snr`, `ssrd`, `q`, `skt` | same names | ln(1 + mm day-1), K, MJ m-2 day-1, MJ m-2 day-1, kg kg-1, K |
| `ETOPOavg`, `ETOPOsd` | `elev_mean`, `elev_std` | m |
| `tp` (static) | `p_mean` | mm yr-1 (published attribute values are in the thousands: annual sums) |
| `arid` | `aridity` | 1; SoMo.ml's definition is not in its public code; ours is mean net radiation as evaporation / mean precipitation. Assumed equivalent, unverified |
| `clay`, `sand`, `silt` | same | fraction 0-1 |
| `poro_top`, `poro_mid` | `porosity_top`, `porosity_mid` | fraction 0-1 |
| `domveg` | `veg_type` | numeric code, z-scored as a continuous value; assumed to use the same class codes as our `veg_type` (1..17), unverified |
| `sm` | layer 1 target mean/std | m3 m-3 |

The artifact's content id depends only on the weights and `model.json`, so the same files always give the
same id; `provenance.json` records each source file's URL, size and sha256.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from somocloud import __version__, stores
from somocloud.config import RunConfig
from somocloud.context import Context
from somocloud.layers import DEPTH_BOUNDS, DEPTHS, DYNAMIC_INPUTS, STATIC_INPUTS
from somocloud.model.artifact import FORMAT, LayerCard, ModelCard, save_artifact

log = logging.getLogger(__name__)

SOMO_DYNAMIC = ("log_tp", "t2m", "snr", "ssrd", "q", "skt")
"""SoMo.ml v1 dynamic inputs in model order."""
SOMO_STATIC = ("ETOPOavg", "ETOPOsd", "tp", "arid", "clay", "sand", "silt", "poro_top", "poro_mid", "domveg")
"""SoMo.ml v1 static inputs in model order."""
DYNAMIC_NAMES: dict[str, str] = dict(zip(SOMO_DYNAMIC, DYNAMIC_INPUTS, strict=True))
"""SoMo.ml dynamic name → somocloud input name (identical)."""
STATIC_NAMES: dict[str, str] = {
    "ETOPOavg": "elev_mean", "ETOPOsd": "elev_std", "tp": "p_mean", "arid": "aridity", "clay": "clay",
    "sand": "sand", "silt": "silt", "poro_top": "porosity_top", "poro_mid": "porosity_mid",
    "domveg": "veg_type",
}  # fmt: skip
"""SoMo.ml static name → somocloud input name."""
TARGET_COLUMN = "sm"
"""Dynamic-scaler column of the target (m3 m-3)."""
LOG_TP_FALLBACK = "tp"
"""Dynamic-scaler column read as `log_tp`'s statistics when `log_tp` is absent (see the module doc)."""
MEAN_ROW, STD_ROW = "aveK", "stdK"
"""Row labels of the means and standard deviations in the scaler CSVs."""

HIDDEN_SIZE = 128
DROPOUT = 0.5
SEQ_LENGTH = 365
INITIAL_FORGET_BIAS = 5.0
INFERENCE_MODE = "exact"
LAYER = 1
"""The product layer (1-based) of the published model: SoMo.ml's layer 0, 0-10 cm."""
MEMBER_FILE = f"layer{LAYER}/member0.pt"

# The published parameter layout, as (name, shape) with H the hidden size.
_N_DYN, _N_STAT = len(SOMO_DYNAMIC), len(SOMO_STATIC)

if tuple(STATIC_NAMES[n] for n in SOMO_STATIC) != STATIC_INPUTS:  # pragma: no cover - import-time check
    raise RuntimeError("SoMo.ml static order no longer matches somocloud.layers.STATIC_INPUTS")


class SomoImportError(ValueError):
    """A SoMo.ml file that cannot be imported; the message names the file and the column, row or key."""


def expected_shapes(hidden_size: int = HIDDEN_SIZE) -> dict[str, tuple[int, ...]]:
    """The state dict keys and shapes of the published checkpoint for `hidden_size`."""
    h = hidden_size
    return {
        "lstm.weight_ih": (_N_DYN, 3 * h),
        "lstm.weight_hh": (h, 3 * h),
        "lstm.weight_sh": (_N_STAT, h),
        "lstm.bias": (3 * h,),
        "lstm.bias_s": (h,),
        "fc.weight": (1, h),
        "fc.bias": (1,),
    }


# ------------------------------------------------------------------------------------------ readers


def _read(url: str, what: str) -> bytes:
    if re.match(r"^[a-z0-9]+://[^/]*@", url):
        raise SomoImportError(f"{what} URL must not contain credentials; use the environment instead")
    try:
        return stores.read_bytes(url)
    except FileNotFoundError:
        raise SomoImportError(f"{what} {url} does not exist") from None


def parse_checkpoint(data: bytes, url: str, hidden_size: int = HIDDEN_SIZE) -> dict[str, Any]:
    """The checkpoint's tensors (float32, CPU), after checking keys, shapes and finiteness."""
    import torch

    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip or weights-only errors: all mean "not a plain state dict"
        raise SomoImportError(
            f"{url}: not a torch state dict that loads with weights_only=True ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    if not isinstance(state, Mapping):
        raise SomoImportError(
            f"{url}: expected a state dict (a mapping of tensors), got {type(state).__name__}"
        )
    want = expected_shapes(hidden_size)
    missing = [k for k in want if k not in state]
    if missing:
        raise SomoImportError(
            f"{url}: key {missing[0]!r} is missing (the file has {sorted(map(str, state))})"
        )
    extra = sorted(str(k) for k in state if k not in want)
    if extra:
        raise SomoImportError(f"{url}: unexpected key {extra[0]!r} (expected exactly {list(want)})")
    out: dict[str, Any] = {}
    for key, shape in want.items():
        value = state[key]
        if not isinstance(value, torch.Tensor):
            raise SomoImportError(f"{url}: key {key!r} is a {type(value).__name__}, not a tensor")
        if tuple(value.shape) != shape:
            raise SomoImportError(
                f"{url}: key {key!r} has shape {tuple(value.shape)}, expected {shape} "
                f"({_N_DYN} dynamic inputs, {_N_STAT} static inputs, hidden size {hidden_size})"
            )
        if not value.is_floating_point():
            raise SomoImportError(f"{url}: key {key!r} has dtype {value.dtype}, expected a float tensor")
        tensor = value.detach().to(device="cpu", dtype=torch.float32).contiguous().clone()
        if not bool(torch.isfinite(tensor).all()):
            raise SomoImportError(f"{url}: key {key!r} holds non-finite values")
        out[key] = tensor
    return out


def parse_scaler(text: str, url: str, columns: Sequence[str]) -> dict[str, tuple[float, float]]:
    """`columns` → (mean, std) from a scaler CSV (header of names; rows `aveK`, `stdK`, labelled in the
    first column). Raises `SomoImportError` naming `url` and the missing or bad column or row."""
    rows = [[cell.strip() for cell in row] for row in csv.reader(io.StringIO(text.lstrip("\ufeff")))]
    rows = [r for r in rows if any(r)]
    if not rows:
        raise SomoImportError(
            f"{url}: empty scaler file (expected a header row and rows {MEAN_ROW}, {STD_ROW})"
        )
    header = rows[0]
    names = header[1:]
    dupes = sorted({n for n in names if n and names.count(n) > 1})
    if dupes:
        raise SomoImportError(f"{url}: column {dupes[0]!r} appears more than once in the header")
    by_label: dict[str, list[str]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if row[0] in by_label:
            raise SomoImportError(f"{url}: row {row[0]!r} appears more than once (again on row {line})")
        if len(row) != len(header):
            raise SomoImportError(
                f"{url}: row {row[0]!r} has {len(row)} fields but the header has {len(header)}"
            )
        by_label[row[0]] = row[1:]
    for label in (MEAN_ROW, STD_ROW):
        if label not in by_label:
            raise SomoImportError(
                f"{url}: row {label!r} is missing (rows found: {sorted(by_label)}; the first field of each "
                "row is its label)"
            )
    out: dict[str, tuple[float, float]] = {}
    for name in columns:
        if name not in names:
            raise SomoImportError(f"{url}: column {name!r} is missing (header has {names})")
        j = names.index(name)
        values = []
        for label in (MEAN_ROW, STD_ROW):
            raw = by_label[label][j]
            try:
                value = float(raw)
            except ValueError:
                raise SomoImportError(
                    f"{url}: row {label!r}, column {name!r}: {raw!r} is not a number"
                ) from None
            if not math.isfinite(value):
                raise SomoImportError(f"{url}: row {label!r}, column {name!r} is not finite ({raw!r})")
            values.append(value)
        if values[1] <= 0:
            raise SomoImportError(f"{url}: row {STD_ROW!r}, column {name!r} must be > 0, got {values[1]}")
        out[name] = (values[0], values[1])
    return out


def _dynamic_columns(text: str, url: str) -> tuple[str, ...]:
    """The dynamic scaler's columns to read: `log_tp` or, without it, the `tp` fallback (module doc)."""
    header = next(csv.reader(io.StringIO(text.lstrip("\ufeff"))), [])
    names = {cell.strip() for cell in header[1:]}
    if "log_tp" not in names and LOG_TP_FALLBACK in names:
        log.warning(
            "import-somoml: %s has no 'log_tp' column; reading its %r column as the statistics of "
            "log_tp = ln(1 + tp[mm/day])",
            url,
            LOG_TP_FALLBACK,
        )
        return (LOG_TP_FALLBACK, *SOMO_DYNAMIC[1:], TARGET_COLUMN)
    return (*SOMO_DYNAMIC, TARGET_COLUMN)


# ------------------------------------------------------------------------------------------ import


def _source(url: str, data: bytes) -> dict[str, Any]:
    return {"url": url, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _prepare_output(url: str) -> None:
    """Clear a previous model artifact at `url`; refuse to clear anything else."""
    if not stores.exists(url):
        return
    if stores.exists(stores.join(url, "manifest.json")) or stores.exists(stores.join(url, "model.json")):
        stores.remove(url)
    elif stores.list_files(url):
        raise FileExistsError(
            f"model store {url} exists and is not a model artifact; refusing to overwrite it"
        )


def import_somoml_v1(
    checkpoint_url: str,
    dynamic_scaler_url: str,
    static_scaler_url: str,
    out_url: str,
    *,
    documents: Mapping[str, Any] | None = None,
) -> str:
    """Import the published SoMo.ml v1 checkpoint and scalers into a model artifact at `out_url`.

    Every input is read and checked before anything is written; a previous artifact at `out_url` is
    replaced. `documents` (name → JSON data) are written into the artifact too (e.g. `config.json`).

    Returns:
        The artifact's content id (the same files always give the same id).

    Raises:
        SomoImportError: a file is missing, or a key, shape, column or row is wrong (the message names
            the file and the key, column or row).
    """
    ck_bytes = _read(checkpoint_url, "checkpoint")
    dyn_bytes = _read(dynamic_scaler_url, "dynamic scaler")
    stat_bytes = _read(static_scaler_url, "static scaler")
    state = parse_checkpoint(ck_bytes, checkpoint_url)
    dyn_text = _text(dyn_bytes, dynamic_scaler_url)
    stat_text = _text(stat_bytes, static_scaler_url)
    dyn_columns = _dynamic_columns(dyn_text, dynamic_scaler_url)
    dyn = parse_scaler(dyn_text, dynamic_scaler_url, dyn_columns)
    stat = parse_scaler(stat_text, static_scaler_url, SOMO_STATIC)

    # dyn_columns[0] is `log_tp` or its fallback; the rest are the other inputs, then the target.
    dyn_map = dict(zip(dyn_columns[:_N_DYN], DYNAMIC_INPUTS, strict=True))
    scaler = {
        "mean": {ours: dyn[col][0] for col, ours in dyn_map.items()}
        | {STATIC_NAMES[col]: stat[col][0] for col in SOMO_STATIC},
        "std": {ours: dyn[col][1] for col, ours in dyn_map.items()}
        | {STATIC_NAMES[col]: stat[col][1] for col in SOMO_STATIC},
    }
    target_mean, target_std = dyn[TARGET_COLUMN]
    layer = LayerCard(
        depth=float(DEPTHS[LAYER - 1]),
        dynamic_inputs=list(DYNAMIC_INPUTS),
        static_inputs=list(STATIC_INPUTS),
        target_mean=target_mean,
        target_std=target_std,
        members=[MEMBER_FILE],
        seeds=[0],
    )
    card = ModelCard(
        hidden_size=HIDDEN_SIZE,
        dropout=DROPOUT,
        seq_length=SEQ_LENGTH,
        initial_forget_bias=INITIAL_FORGET_BIAS,
        inference_mode=INFERENCE_MODE,
        input_scaler=scaler,
        layers=[layer],
    )
    provenance = _provenance(
        {
            "checkpoint": _source(checkpoint_url, ck_bytes),
            "dynamic_scaler": _source(dynamic_scaler_url, dyn_bytes),
            "static_scaler": _source(static_scaler_url, stat_bytes),
        },
        dyn_map,
    )
    docs: dict[str, Any] = {
        "provenance.json": provenance,
        # SoMo.ml was trained on ISMN stations we do not know: no held-out cells to evaluate at.
        "split.json": {"train_cells": [], "holdout_cells": []},
        **(documents or {}),
    }
    _prepare_output(out_url)
    content_id = save_artifact(out_url, card, {MEMBER_FILE: state}, docs)
    log.info("import-somoml: wrote %s (format %s, content id %s…)", out_url, FORMAT, content_id[:12])
    return content_id


def _text(data: bytes, url: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SomoImportError(f"{url}: not a UTF-8 text CSV ({exc.reason} at byte {exc.start})") from None


def _provenance(sources: Mapping[str, Any], dyn_map: Mapping[str, str]) -> dict[str, Any]:
    assumptions = [
        "static `arid` is taken as our `aridity` (mean net radiation as evaporation / mean precipitation, "
        "dimensionless); SoMo.ml's definition is not in its public code: unverified",
        "static `domveg` codes are taken as our `veg_type` codes (1..17); unverified",
        "static `tp` is long-term mean precipitation in mm yr-1, as our `p_mean`; no conversion",
        "dynamic inputs use our forcing units (t2m, skt K; q kg kg-1; snr, ssrd MJ m-2 day-1; "
        "log_tp = ln(1 + tp[mm day-1])); no conversion",
        "layers 2 and 3 (0.20, 0.40 m) have no published model: predict leaves them NaN",
    ]
    if dyn_map.get(LOG_TP_FALLBACK) == "log_tp":
        assumptions.insert(
            0,
            "the dynamic scaler has no `log_tp` column: its `tp` column was read as the statistics of log_tp",
        )
    return {
        "source": "SoMo.ml v1 (O & Orth 2021, Scientific Data 8:170), published checkpoint and scalers",
        "importer": "somocloud.model.somoml_v1",
        "somocloud_version": __version__,
        "files": dict(sources),
        "layer": {
            "product_layer": LAYER,
            "somoml_layer": 0,
            "depth_m": float(DEPTHS[LAYER - 1]),
            "bounds_m": [float(b) for b in DEPTH_BOUNDS[LAYER - 1]],
        },
        "names": {
            "dynamic": dict(dyn_map),
            "static": dict(STATIC_NAMES),
            "target": TARGET_COLUMN,
        },
        "scaler_rows": {"mean": MEAN_ROW, "std": STD_ROW},
        "assumptions": assumptions,
    }


def import_step(cfg: RunConfig, ctx: Context) -> dict[str, str]:
    """The `import-somoml` verb: `import_somoml.*` files → `stores.model`; returns `{"model": url}`."""
    section = cfg.import_somoml
    urls: dict[str, str] = {}
    for key in ("checkpoint", "dynamic_scaler", "static_scaler"):
        value = getattr(section, key)
        if not value:
            raise SomoImportError(
                f"import_somoml.{key} is not set (give --{key.replace('_', '-')} or set it in the config)"
            )
        urls[key] = str(value)
    lookback = (cfg.period.start - cfg.lookback_start).days
    if lookback < SEQ_LENGTH - 1:
        log.warning(
            "import-somoml: the config's forcing starts %d days before period.start but this model needs %d "
            "(set model.seq_length: %d before running `forcing`)",
            lookback,
            SEQ_LENGTH - 1,
            SEQ_LENGTH,
        )
    url = cfg.store("model")
    import_somoml_v1(
        urls["checkpoint"],
        urls["dynamic_scaler"],
        urls["static_scaler"],
        url,
        documents={"config.json": cfg.resolved()},
    )
    return {"model": url}
