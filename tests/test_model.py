"""The EA-LSTM, its fused nn.LSTM export, and the model artifact."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from somocloud import stores
from somocloud.model.artifact import LayerCard, ModelCard, load_artifact, save_artifact
from somocloud.model.ealstm import EALSTM, to_fast_lstm
from somocloud.model.features import Scaler, stack_inputs, window_view


def _random_model(seed: int = 0, n_dyn: int = 6, n_stat: int = 10, hidden: int = 16) -> EALSTM:
    torch.manual_seed(seed)
    m = EALSTM(n_dyn, n_stat, hidden, dropout=0.5, initial_forget_bias=5.0).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3)
    return m


def test_initialisation_follows_the_paper_code() -> None:
    m = EALSTM(6, 10, 8, initial_forget_bias=5.0)
    assert torch.equal(m.lstm.bias[:8], torch.full((8,), 5.0))
    assert torch.equal(m.lstm.bias[8:], torch.zeros(16))
    assert torch.equal(m.lstm.weight_hh, torch.eye(8).repeat(1, 3))
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == {
        "lstm.weight_ih": (6, 24), "lstm.weight_hh": (8, 24), "lstm.weight_sh": (10, 8),
        "lstm.bias": (24,), "lstm.bias_s": (8,), "fc.weight": (1, 8), "fc.bias": (1,),
    }  # fmt: skip


def test_cell_equations_by_hand() -> None:
    """One step from zero state: c = i·tanh(g), h = σ(o)·tanh(c), with i from statics only."""
    m = _random_model(1, n_dyn=2, n_stat=3, hidden=4)
    x_d, x_s = torch.randn(1, 1, 2), torch.randn(1, 3)
    cell = m.lstm
    i = torch.sigmoid(x_s @ cell.weight_sh + cell.bias_s)
    _f, o, g = (x_d[:, 0] @ cell.weight_ih + cell.bias).split(4, dim=1)
    c = i * torch.tanh(g)  # σ(f)·c0 vanishes
    h = torch.sigmoid(o) * torch.tanh(c)
    torch.testing.assert_close(cell(x_d, x_s)[:, 0], h)


def test_fast_path_matches_reference_cell() -> None:
    m = _random_model(2)
    x_d, x_s = torch.randn(32, 60, 6), torch.randn(32, 10)
    assert (m(x_d, x_s) - to_fast_lstm(m)(x_d, x_s)).abs().max().item() < 1e-5


def _grads(m: torch.nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    m.zero_grad()
    loss.backward()
    return {k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("last_n", [1, 7])
def test_fused_recurrence_matches_the_autograd_loop(last_n: int) -> None:
    """The hand-written backward gives the reference loop's outputs and gradients (float64, random weights)."""
    m = _random_model(3, hidden=12).double().train()
    m.dropout.p = 0.0
    x_d, x_s = torch.randn(9, 40, 6, dtype=torch.float64), torch.randn(9, 10, dtype=torch.float64)
    w = torch.randn(9, last_n, dtype=torch.float64).squeeze(-1)

    def loss(reference: bool) -> tuple[torch.Tensor, torch.Tensor]:
        h = m.lstm(x_d, x_s, last_only=last_n == 1, reference=reference)
        h = h if last_n == 1 else h[:, -last_n:]
        y = m.fc(h).squeeze(-1)
        return y, (y * w).sum()

    y_ref, l_ref = loss(True)
    g_ref = _grads(m, l_ref)
    y_new, l_new = loss(False)
    g_new = _grads(m, l_new)
    torch.testing.assert_close(y_new, y_ref, rtol=0, atol=1e-12)
    assert g_new.keys() == g_ref.keys() and len(g_ref) == 7
    for k in g_ref:
        torch.testing.assert_close(g_new[k], g_ref[k], rtol=1e-9, atol=1e-12, msg=k)


def test_fused_recurrence_in_float32_and_buffer_reuse_guard() -> None:
    m = _random_model(4).train()
    x_d, x_s = torch.randn(16, 50, 6), torch.randn(16, 10)
    torch.testing.assert_close(m.lstm(x_d, x_s), m.lstm(x_d, x_s, reference=True), rtol=0, atol=1e-5)
    first = m(x_d, x_s, last_n=5).sum()
    second = m(x_d, x_s).sum()  # a second training forward takes the buffers over
    with pytest.raises(RuntimeError, match="reused by another training forward"):
        first.backward()
    second.backward()  # the latest forward's backward is fine
    with torch.no_grad():
        m(x_d, x_s)  # forwards without gradients use their own buffers
    third = m(x_d, x_s).sum()
    third.backward()


def test_fast_path_gradients_match_reference_cell() -> None:
    """Gradients through the masked nn.LSTM equal the reference cell's (inputs and mapped weights)."""
    m = _random_model(5, hidden=8)
    fast = to_fast_lstm(m)
    x_d = torch.randn(6, 30, 6, requires_grad=True)
    x_s = torch.randn(6, 10, requires_grad=True)
    w = torch.randn(6)
    (m.lstm(x_d, x_s, last_only=True, reference=True) @ m.fc.weight.T).squeeze(-1).mul(w).sum().backward()
    ref_d, ref_s = x_d.grad.clone(), x_s.grad.clone()
    g_ref = {k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None}
    x_d.grad = x_s.grad = None
    (fast(x_d, x_s) * w).sum().backward()
    torch.testing.assert_close(x_d.grad, ref_d, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(x_s.grad, ref_s, rtol=1e-4, atol=1e-6)
    hs = 8
    g_ih = fast.lstm.weight_ih_l0.grad  # rows i, f, g, o; columns [dynamic, static]
    g_hh = fast.lstm.weight_hh_l0.grad
    f_ref, o_ref, g_ref_ih = g_ref["lstm.weight_ih"].split(hs, dim=1)
    torch.testing.assert_close(g_ih[hs : 2 * hs, :6].T, f_ref, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(g_ih[2 * hs : 3 * hs, :6].T, g_ref_ih, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(g_ih[3 * hs :, :6].T, o_ref, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(g_ih[:hs, 6:].T, g_ref["lstm.weight_sh"], rtol=1e-4, atol=1e-6)
    u_f, u_o, u_g = g_ref["lstm.weight_hh"].split(hs, dim=1)
    torch.testing.assert_close(g_hh[hs:].T, torch.cat([u_f, u_g, u_o], dim=1), rtol=1e-4, atol=1e-6)


def test_last_n_outputs_agree_between_paths() -> None:
    m = _random_model(6)
    x_d, x_s = torch.randn(8, 40, 6), torch.randn(8, 10)
    out = m(x_d, x_s, last_n=10)
    assert out.shape == (8, 10)
    torch.testing.assert_close(out[:, -1], m(x_d, x_s), rtol=0, atol=1e-6)
    torch.testing.assert_close(to_fast_lstm(m)(x_d, x_s, last_n=10), out, rtol=0, atol=1e-5)


def test_gradient_free_steps_match_the_reference_loop_across_row_blocks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Inference (no grad) runs the rewritten steps (doubled g weights, h/2 state) in blocks of rows."""
    import somocloud.model.ealstm as ealstm

    monkeypatch.setattr(ealstm, "CPU_ROWS", 3)  # 8 rows → blocks of 3, 3 and 2
    m = _random_model(7)
    x_d, x_s = torch.randn(8, 30, 6), torch.randn(8, 10)
    with torch.no_grad():
        reference = m.lstm(x_d, x_s, reference=True)
        torch.testing.assert_close(m.lstm(x_d, x_s), reference, rtol=0, atol=1e-6)
        torch.testing.assert_close(m.lstm(x_d, x_s, last_only=True), reference[:, -1], rtol=0, atol=1e-6)
        torch.testing.assert_close(m.lstm(x_d, x_s, keep=7), reference[:, -7:], rtol=0, atol=1e-6)
        torch.testing.assert_close(
            m.lstm(x_d, x_s, keep=7, reference=True), reference[:, -7:], rtol=0, atol=0
        )
        assert reference.abs().max() > 0.1  # the states are not trivially small


def test_stack_inputs_and_scaler() -> None:
    fields = {"tp": np.array([[0.0, np.e - 1]]), "t2m": np.array([[280.0, 290.0]])}
    x = stack_inputs(fields, ["log_tp", "t2m"])
    np.testing.assert_allclose(x[0, :, 0], [0.0, 1.0], rtol=1e-6)
    sc = Scaler.fit({"log_tp": x[..., 0], "t2m": x[..., 1]})
    z = sc.apply(x, ["log_tp", "t2m"])
    np.testing.assert_allclose(z[0], [[-1, -1], [1, 1]], rtol=1e-6)
    assert Scaler.from_dict(json.loads(json.dumps(sc.to_dict()))).mean == sc.mean
    with pytest.raises(KeyError, match="skt"):
        stack_inputs(fields, ["skt"])


def test_window_view_is_the_trailing_window() -> None:
    x = torch.arange(10.0).reshape(1, 10, 1)
    w = window_view(x, 4)
    assert w.shape == (1, 7, 4, 1)
    assert w[0, 0, :, 0].tolist() == [0, 1, 2, 3] and w[0, -1, :, 0].tolist() == [6, 7, 8, 9]


def _card(n_members: int) -> ModelCard:
    layer = LayerCard(
        0.05,
        ["log_tp", "t2m", "snr", "ssrd", "q", "skt"],
        [f"s{i}" for i in range(10)],
        target_mean=0.25,
        target_std=0.1,
        members=[f"layer1/member{k}.pt" for k in range(n_members)],
        seeds=list(range(n_members)),
    )
    return ModelCard(16, 0.5, 30, 5.0, "exact", {"mean": {}, "std": {}}, [layer])


@pytest.mark.parametrize("root", ["local", "memory"])
def test_artifact_round_trip(tmp_path, root) -> None:
    url = str(tmp_path / "model") if root == "local" else "memory://artifacts/model"
    nets = [_random_model(k) for k in range(2)]
    cid = save_artifact(
        url,
        _card(2),
        {f"layer1/member{k}.pt": n.state_dict() for k, n in enumerate(nets)},
        {"split.json": {"train_cells": [[0, 1]]}},
    )
    assert stores.read_json(stores.join(url, "manifest.json"))["content_id"] == cid
    loaded = load_artifact(url)
    assert loaded.content_id == cid and len(loaded.members[0]) == 2
    x_d, x_s = torch.randn(5, 30, 6), torch.randn(5, 10)
    out = loaded.predict(0, x_d, x_s)
    expected = torch.stack([torch.clamp(n(x_d, x_s) * 0.1 + 0.25, min=0) for n in nets])
    assert (out - expected).abs().max().item() < 1e-5
    # same weights → same id; different weights → different id
    again = save_artifact(
        url, _card(2), {f"layer1/member{k}.pt": n.state_dict() for k, n in enumerate(nets)}, {}
    )
    assert again == cid
    other = save_artifact(
        url, _card(2), {f"layer1/member{k}.pt": _random_model(9 + k).state_dict() for k in range(2)}, {}
    )
    assert other != cid


def test_corrupted_artifact_fails_loudly(tmp_path) -> None:
    url = str(tmp_path / "model")
    save_artifact(url, _card(1), {"layer1/member0.pt": _random_model().state_dict()}, {})
    stores.write_bytes(stores.join(url, "layer1/member0.pt"), b"garbage")
    with pytest.raises(ValueError, match=r"member0\.pt does not match"):
        load_artifact(url)
    stores.remove(stores.join(url, "manifest.json"))
    with pytest.raises(FileNotFoundError, match=r"manifest\.json missing"):
        load_artifact(url)
