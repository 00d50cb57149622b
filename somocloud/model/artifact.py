"""The model artifact: everything `predict` needs, in one folder on any store.

    manifest.json      format, sha256 of every file, content id (written last: its presence = complete)
    model.json         architecture, inference mode, input names, scalers, layers → member weight files
    split.json         train_cells / holdout_cells as [row, col]
    config.json        the resolved run config that trained it
    metrics.json       training and validation losses
    layer<k>/member<m>.pt   torch state dicts

Weights are loaded on CPU or GPU with no other state."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from somocloud import stores
from somocloud.model.features import Scaler

FORMAT = "somocloud-model/1"


@dataclass
class LayerCard:
    """One layer's models."""

    depth: float
    """Mid-depth of the layer in m."""
    dynamic_inputs: list[str]
    """Dynamic input names in model order (may include `sm_layer<k>` of layers above)."""
    static_inputs: list[str]
    """Static input names in model order."""
    target_mean: float
    """Global target mean (m3 m-3) used to de-standardise."""
    target_std: float
    """Global target std (m3 m-3)."""
    members: list[str] = field(default_factory=list)
    """Weight files of the ensemble members, relative to the artifact folder."""
    seeds: list[int] = field(default_factory=list)
    """Seed of each member."""


@dataclass
class ModelCard:
    """The content of model.json."""

    hidden_size: int
    dropout: float
    seq_length: int
    initial_forget_bias: float
    inference_mode: str
    input_scaler: dict[str, Any]
    layers: list[LayerCard]
    format: str = FORMAT
    predict_last_n: int = 1
    """Steps per training window in the loss: 1 for `exact` models, the block length for `blocked` ones."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise ValueError(f"model.json has format {data.get('format')!r}, expected {FORMAT!r}")
        data["layers"] = [LayerCard(**layer) for layer in data["layers"]]
        return cls(**data)

    @property
    def scaler(self) -> Scaler:
        return Scaler.from_dict(self.input_scaler)


def _state_dict_bytes(state: Mapping[str, Any]) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(dict(state), buf)
    return buf.getvalue()


def _tensor_digest(state: Mapping[str, Any]) -> str:
    # Hash tensor values, not the pickle, so the id depends only on the weights.
    h = hashlib.sha256()
    for key in sorted(state):
        arr = np.ascontiguousarray(state[key].detach().cpu().numpy())
        h.update(key.encode())
        h.update(str(arr.dtype).encode() + str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def save_artifact(
    url: str,
    card: ModelCard,
    weights: Mapping[str, Mapping[str, Any]],
    documents: Mapping[str, Any],
) -> str:
    """Write weights (relative path → state dict), model.json, JSON `documents` (name → data), then the
    manifest. Returns the artifact's content id (sha256 over model.json and the weight values)."""
    stores.remove(stores.join(url, "manifest.json"))  # an artifact being rewritten is incomplete
    files: dict[str, str] = {}
    digest = hashlib.sha256()
    for rel in sorted(weights):
        data = _state_dict_bytes(weights[rel])
        stores.write_bytes(stores.join(url, rel), data)
        files[rel] = hashlib.sha256(data).hexdigest()
        digest.update(rel.encode() + _tensor_digest(weights[rel]).encode())
    model_json = card.to_json()
    stores.write_text(stores.join(url, "model.json"), model_json)
    files["model.json"] = hashlib.sha256(model_json.encode()).hexdigest()
    digest.update(model_json.encode())
    for name, doc in sorted(documents.items()):
        text = json.dumps(doc, indent=2, sort_keys=True, default=str)
        stores.write_text(stores.join(url, name), text)
        files[name] = hashlib.sha256(text.encode()).hexdigest()
    content_id = digest.hexdigest()
    stores.write_json(
        stores.join(url, "manifest.json"), {"format": FORMAT, "content_id": content_id, "files": files}
    )
    return content_id


@dataclass
class LoadedModel:
    """A loaded artifact: the card, one list of member networks per layer, and the content id."""

    url: str
    card: ModelCard
    members: list[list[Any]]
    content_id: str
    device: str = "cpu"

    def predict(self, layer: int, x_d: Any, x_s: Any, last_n: int = 1) -> Any:
        """Standardised inputs (batch, time, n_dyn), (batch, n_stat) → (members, batch) in m3 m-3, clipped
        ≥ 0: the last step's output, or (members, batch, last_n) of the last `last_n` steps."""
        import torch

        lc = self.card.layers[layer]
        with torch.no_grad():
            out = torch.stack([m(x_d, x_s, last_n=last_n) for m in self.members[layer]])
        return torch.clamp(out * lc.target_std + lc.target_mean, min=0.0)


def read_manifest(url: str) -> dict[str, Any]:
    murl = stores.join(url, "manifest.json")
    if not stores.exists(murl):
        raise FileNotFoundError(f"no complete model artifact at {url} (manifest.json missing)")
    data: dict[str, Any] = stores.read_json(murl)
    if data.get("format") != FORMAT:
        raise ValueError(f"{murl}: format {data.get('format')!r}, expected {FORMAT!r}")
    return data


def build_network(
    lc: LayerCard,
    hidden_size: int,
    dropout: float,
    initial_forget_bias: float,
    state: Mapping[str, Any],
    fast: bool = True,
    device: str = "cpu",
) -> Any:
    """One member network of layer card `lc` with weights `state`, in eval mode on `device`; `fast` takes
    the fastest inference form for the device (`ealstm.for_inference`)."""
    from somocloud.model.ealstm import EALSTM, for_inference

    net = EALSTM(len(lc.dynamic_inputs), len(lc.static_inputs), hidden_size, dropout, initial_forget_bias)
    net.load_state_dict(dict(state))
    return for_inference(net, device) if fast else net.eval().to(device)


def load_artifact(url: str, device: str = "cpu", fast: bool = True) -> LoadedModel:
    """Load every member of every layer in eval mode; `fast` takes each one's fastest inference form for
    `device` (the fused nn.LSTM on GPU).

    File hashes are checked against the manifest, so a corrupted artifact fails loudly."""
    import torch

    manifest = read_manifest(url)
    model_json = stores.read_bytes(stores.join(url, "model.json"))
    if hashlib.sha256(model_json).hexdigest() != manifest["files"]["model.json"]:
        raise ValueError(f"{url}/model.json does not match its manifest hash")
    card = ModelCard.from_json(model_json.decode())
    members: list[list[Any]] = []
    for lc in card.layers:
        nets = []
        for rel in lc.members:
            data = stores.read_bytes(stores.join(url, rel))
            if hashlib.sha256(data).hexdigest() != manifest["files"].get(rel):
                raise ValueError(f"{url}/{rel} does not match its manifest hash")
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            net = build_network(
                lc, card.hidden_size, card.dropout, card.initial_forget_bias, state, fast=fast, device=device
            )
            nets.append(net)
        members.append(nets)
    return LoadedModel(url, card, members, manifest["content_id"], device)
