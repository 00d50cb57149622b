"""The Entity-Aware LSTM of SoMo.ml (Kratzert et al. 2019 paper code, as used by SoMo.ml v1).

    i   = σ(x_s W_s + b_s)                    once per sequence, from the statics only
    f, o, g = x_t W_ih + h_{t-1} W_hh + b     one fused matmul, chunk order (f, o, g)
    c_t = σ(f) c_{t-1} + i tanh(g);  h_t = σ(o) tanh(c_t);  zero initial state
    ŷ   = fc(dropout(h_T))                    one dense head on the last step (or on each of the
                                              last n steps, for `predict_last_n` training)

Parameter names and shapes follow the published checkpoint (`lstm.weight_ih` (n_dyn, 3H),
`lstm.weight_hh` (H, 3H), `lstm.weight_sh` (n_stat, H), `lstm.bias` (3H), `lstm.bias_s` (H), `fc.*`).
`to_fast_lstm` exports the same parameters to a `torch.nn.LSTM` fed [dynamic, static] inputs (cuDNN on
GPU): input-gate rows see only the statics and have no recurrent weights.
"""

from __future__ import annotations

import threading
from typing import Any

import torch
from torch import nn


class _Workspace(threading.local):
    """Per-thread buffers of the fused recurrence, reused from one training step to the next.

    Why: a (time, batch, 3H) float32 buffer is ~140 MB at batch 256, 365 steps, hidden 128. Fresh buffers
    are fresh pages, and first-touching them every step cost about as much as the recurrence itself."""

    def __init__(self) -> None:
        self.buffers: dict[str, torch.Tensor] = {}
        self.owner: object | None = None

    def get(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        t = self.buffers.get(name)
        if t is None or t.shape != shape or t.dtype != like.dtype or t.device != like.device:
            t = self.buffers[name] = like.new_empty(shape)
        return t


_WORKSPACE = _Workspace()


def release_workspace() -> None:
    """Free this thread's recurrence buffers (after training)."""
    _WORKSPACE.buffers.clear()
    _WORKSPACE.owner = None


def _tanh_(x: torch.Tensor) -> torch.Tensor:
    """In-place tanh(x) = 2σ(2x) − 1: torch's CPU sigmoid is vectorised, its tanh ~5x slower."""
    return x.mul_(2).sigmoid_().mul_(2).sub_(1)


def _step(
    x_t: torch.Tensor,
    h: torch.Tensor,
    c: torch.Tensor,
    i: torch.Tensor,
    w_ih: torch.Tensor,
    bias: torch.Tensor,
    w_hh: torch.Tensor,
    acts: torch.Tensor,
    c_out: torch.Tensor,
    tanh_c: torch.Tensor,
    h_out: torch.Tensor,
) -> None:
    """One step into preallocated buffers: acts = [σ(f), σ(o), tanh(g)], c_out, tanh(c_out), h_out."""
    hs = h.shape[1]
    a = torch.addmm(bias, x_t, w_ih, out=acts).addmm_(h, w_hh)
    g = a[:, 2 * hs :]
    g.mul_(2)
    a.sigmoid_()
    g.mul_(2).sub_(1)  # tanh(g) = 2σ(2g) − 1, σ taken once over all three chunks
    torch.mul(a[:, :hs], c, out=c_out).addcmul_(i, g)
    _tanh_(tanh_c.copy_(c_out))
    torch.mul(a[:, hs : 2 * hs], tanh_c, out=h_out)


CPU_ROWS = 512
"""Windows per pass of the gradient-free recurrence on CPU: its (rows, 3H) step arrays then stay in the
core's L2 cache across the step's elementwise passes (measured in benchmarks/bench_predict.py)."""


def _run_without_grad(
    x: torch.Tensor,
    i: torch.Tensor,
    w_ih: torch.Tensor,
    bias: torch.Tensor,
    w_hh: torch.Tensor,
    keep: int,
) -> torch.Tensor:
    """The forward of `_Recurrence` keeping only the current state and the outputs of the last `keep`
    steps (time, batch, hidden) (no gradients wanted).

    Same equations, fewer passes over memory per step: the g columns of the weights and bias are doubled
    once, so σ over all three chunks gives σ(2g) and i·tanh(g) = 2i·σ(2g) − i; the state kept is h/2
    (h = σ(o)·(2σ(2c) − 1), so h/2 = σ(o)·(σ(2c) − ½)), against recurrent weights doubled once. Powers of
    two scale exactly. On CPU the batch runs in blocks of `CPU_ROWS` rows."""
    batch, hs = x.shape[1], w_hh.shape[0]
    scale = torch.ones(3 * hs, dtype=x.dtype, device=x.device)
    scale[2 * hs :] = 2
    w_ih, bias, w_hh = w_ih * scale, bias * scale, (w_hh * scale) * 2
    out = x.new_empty(keep, batch, hs)
    rows = CPU_ROWS if x.device.type == "cpu" else batch
    for r0 in range(0, batch, rows):
        r1 = min(r0 + rows, batch)
        _half_state_steps(x[:, r0:r1], i[r0:r1], w_ih, bias, w_hh, out[:, r0:r1])
    return out.mul_(2)


def _half_state_steps(
    x: torch.Tensor,
    i: torch.Tensor,
    w_ih: torch.Tensor,
    bias: torch.Tensor,
    w_hh: torch.Tensor,
    out: torch.Tensor,
) -> None:
    """Run all steps for a block of rows; writes h/2 of the last `len(out)` steps into `out`."""
    steps, batch, _ = x.shape
    first_kept = steps - out.shape[0]
    hs = w_hh.shape[0]
    acts = x.new_empty(batch, 3 * hs)
    f, o, g = acts[:, :hs], acts[:, hs : 2 * hs], acts[:, 2 * hs :]
    i2 = i * 2
    c = [x.new_zeros(batch, hs), x.new_empty(batch, hs)]
    s = x.new_empty(batch, hs)
    h = x.new_zeros(batch, hs)
    scratch = [x.new_empty(batch, hs), x.new_empty(batch, hs)]  # states that are not kept
    for t in range(steps):
        torch.addmm(bias, x[t], w_ih, out=acts).addmm_(h, w_hh).sigmoid_()  # σ(f), σ(o), σ(2g)
        c_new = c[(t + 1) % 2]
        torch.mul(f, c[t % 2], out=c_new).sub_(i).addcmul_(i2, g)  # σ(f)c + i·tanh(g)
        h_out = out[t - first_kept] if t >= first_kept else scratch[t % 2]
        torch.mul(c_new, 2, out=s).sigmoid_().sub_(0.5)
        torch.mul(o, s, out=h_out)  # h/2
        h = h_out


class _Recurrence(torch.autograd.Function):
    """The EA-LSTM recurrence with a hand-written backward, on time-major dynamic inputs.

    Forward keeps the gate activations, cell states and tanh(c) of every step in reusable buffers; backward
    walks back in time with one (B, 3H) x (3H, H) product per step and forms the recurrent and the input
    weight gradients in one GEMM each over all steps. Same values as the autograd loop
    (`EALSTMCell.forward(reference=True)`) to float rounding; tests compare both. Used when gradients are recorded (training); its buffers are
    reused by the next training forward of the thread, which a pending backward detects and refuses."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        i: torch.Tensor,
        w_ih: torch.Tensor,
        bias: torch.Tensor,
        w_hh: torch.Tensor,
        last_only: bool,
    ) -> torch.Tensor:
        steps, batch, _ = x.shape
        h3 = w_hh.shape[1]
        hs = h3 // 3
        ws = _WORKSPACE
        acts = ws.get("acts", (steps, batch, h3), x)  # σ(f), σ(o), tanh(g)
        c = ws.get("c", (steps + 1, batch, hs), x)
        h = ws.get("h", (steps + 1, batch, hs), x)
        tanh_c = ws.get("tanh_c", (steps, batch, hs), x)
        c[0].zero_()
        h[0].zero_()
        for t in range(steps):
            _step(x[t], h[t], c[t], i, w_ih, bias, w_hh, acts[t], c[t + 1], tanh_c[t], h[t + 1])
        ctx.save_for_backward(x, acts, c, h, tanh_c, i, w_ih, w_hh)
        ctx.last_only = last_only
        ctx.token = ws.owner = object()
        return h[steps].clone() if last_only else h[1:].clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if _WORKSPACE.owner is not ctx.token:
            raise RuntimeError(
                "EA-LSTM recurrence buffers were reused by another training forward before this backward; "
                "call backward before the next forward, or run that forward with reference=True"
            )
        x, acts, c, h, tanh_c, i, w_ih, w_hh = ctx.saved_tensors
        steps, batch, h3 = acts.shape
        hs = h3 // 3
        dgates = _WORKSPACE.get("dgates", (steps, batch, h3), acts)
        dh = (grad if ctx.last_only else grad[steps - 1]).clone()
        dc = acts.new_zeros(batch, hs)
        di = acts.new_zeros(batch, hs)
        w_hh_t = w_hh.t().contiguous()
        tmp = acts.new_empty(batch, hs)
        slope = acts.new_empty(batch, h3)
        for t in range(steps - 1, -1, -1):
            a, d = acts[t], dgates[t]
            # activation slopes of all three chunks: σ(1 − σ) for f and o, 1 − tanh² for g
            torch.mul(a, a, out=slope)
            slope[:, : 2 * hs].neg_().add_(a[:, : 2 * hs])
            slope[:, 2 * hs :].neg_().add_(1)
            torch.mul(dh, tanh_c[t], out=d[:, hs : 2 * hs])  # ∂h/∂σ(o)
            torch.mul(tanh_c[t], tanh_c[t], out=tmp)
            dc.add_(tmp.neg_().add_(1).mul_(a[:, hs : 2 * hs]).mul_(dh))  # + ∂h/∂c
            torch.mul(dc, c[t], out=d[:, :hs])  # ∂c/∂σ(f)
            torch.mul(dc, i, out=d[:, 2 * hs :])  # ∂c/∂tanh(g)
            d.mul_(slope)
            di.addcmul_(dc, a[:, 2 * hs :])
            dc.mul_(a[:, :hs])
            if t > 0:
                torch.mm(d, w_hh_t, out=dh)
                if not ctx.last_only:
                    dh.add_(grad[t - 1])
        flat = dgates.reshape(steps * batch, h3)
        dw_hh = torch.mm(h[:-1].reshape(steps * batch, hs).t(), flat)
        dw_ih = torch.mm(x.reshape(steps * batch, -1).t(), flat)
        dx = torch.matmul(dgates, w_ih.t()) if ctx.needs_input_grad[0] else None
        return dx, di, dw_ih, flat.sum(0), dw_hh, None


class EALSTMCell(nn.Module):
    """The recurrent part; returns the hidden state of every step (or of the last)."""

    def __init__(self, n_dynamic: int, n_static: int, hidden_size: int, initial_forget_bias: float = 5.0):
        super().__init__()
        self.hidden_size = hidden_size
        self.initial_forget_bias = initial_forget_bias
        self.weight_ih = nn.Parameter(torch.empty(n_dynamic, 3 * hidden_size))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, 3 * hidden_size))
        self.weight_sh = nn.Parameter(torch.empty(n_static, hidden_size))
        self.bias = nn.Parameter(torch.empty(3 * hidden_size))
        self.bias_s = nn.Parameter(torch.empty(hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # As the paper code: orthogonal input weights, identity recurrent weights per gate, zero biases,
        # forget-gate bias (first chunk) set to initial_forget_bias.
        nn.init.orthogonal_(self.weight_ih.data)
        nn.init.orthogonal_(self.weight_sh.data)
        self.weight_hh.data.copy_(torch.eye(self.hidden_size).repeat(1, 3))
        nn.init.zeros_(self.bias)
        nn.init.zeros_(self.bias_s)
        self.bias.data[: self.hidden_size] = self.initial_forget_bias

    def forward(
        self,
        x_d: torch.Tensor,
        x_s: torch.Tensor,
        last_only: bool = False,
        reference: bool = False,
        keep: int | None = None,
    ) -> torch.Tensor:
        """x_d (batch, time, n_dynamic), x_s (batch, n_static) → h (batch, time, hidden), only its last
        `keep` steps (batch, keep, hidden), or the last step's h (batch, hidden) with `last_only`.

        `reference=True` runs the plain autograd loop of the equations (the definition the fused
        recurrence is tested against); otherwise `_Recurrence` when gradients are recorded (training),
        else the same steps keeping only the current state."""
        i = torch.sigmoid(torch.addmm(self.bias_s, x_s, self.weight_sh))
        if not reference:
            x = x_d.transpose(0, 1).contiguous()  # time-major
            weights = (self.weight_ih, self.bias, self.weight_hh)
            if torch.is_grad_enabled():
                h = _Recurrence.apply(x, i, *weights, last_only)
                if keep is not None and not last_only:
                    h = h[-keep:]
            else:
                h = _run_without_grad(x, i, *weights, 1 if last_only else keep or x.shape[0])
                if last_only:
                    h = h[0]
            return h if last_only else h.transpose(0, 1)
        batch, _, _ = x_d.shape
        hs = self.hidden_size
        h = x_d.new_zeros(batch, hs)
        c = x_d.new_zeros(batch, hs)
        xw = torch.matmul(x_d, self.weight_ih) + self.bias  # all steps in one GEMM
        out = []
        # unbind, not xw[:, t]: the backward of each indexing op would zero-fill a whole (batch, time, 3H)
        # gradient, which made a 365-step backward ~30x slower
        for x_t in xw.unbind(1):
            gates = torch.addmm(x_t, h, self.weight_hh)
            f, o, g = gates.split(hs, dim=1)
            c = torch.sigmoid(f) * c + i * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            if not last_only:
                out.append(h)
        return h if last_only else torch.stack(out[-keep if keep else 0 :], dim=1)


class EALSTM(nn.Module):
    """EA-LSTM with dropout on the last hidden state and one dense head: a standardised value per window."""

    def __init__(
        self,
        n_dynamic: int,
        n_static: int,
        hidden_size: int = 128,
        dropout: float = 0.5,
        initial_forget_bias: float = 5.0,
    ):
        super().__init__()
        self.lstm = EALSTMCell(n_dynamic, n_static, hidden_size, initial_forget_bias)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden_size, 1)

    def forward(self, x_d: torch.Tensor, x_s: torch.Tensor, last_n: int = 1) -> torch.Tensor:
        """x_d (batch, time, n_dynamic), x_s (batch, n_static) → (batch,) standardised prediction of the
        last step, or (batch, last_n) of the last `last_n` steps (`predict_last_n` training)."""
        if last_n == 1:
            return self.fc(self.dropout(self.lstm(x_d, x_s, last_only=True))).squeeze(-1)
        return self.fc(self.dropout(self.lstm(x_d, x_s, keep=last_n))).squeeze(-1)


class FastEALSTM(nn.Module):
    """The same function on the fused `nn.LSTM` kernel, for inference (see `to_fast_lstm`)."""

    def __init__(self, lstm: nn.LSTM, fc: nn.Linear, n_dynamic: int):
        super().__init__()
        self.lstm = lstm
        self.fc = fc
        self.n_dynamic = n_dynamic

    def forward(self, x_d: torch.Tensor, x_s: torch.Tensor, last_n: int = 1) -> torch.Tensor:
        x = torch.cat([x_d, x_s.unsqueeze(1).expand(-1, x_d.shape[1], -1)], dim=2)
        out, (h_n, _) = self.lstm(x)
        return self.fc(h_n[-1] if last_n == 1 else out[:, -last_n:]).squeeze(-1)


def to_fast_lstm(model: EALSTM) -> FastEALSTM:
    """Export an EA-LSTM to a masked `nn.LSTM` (PyTorch gate order i, f, g, o) with identical outputs."""
    cell = model.lstm
    hs = cell.hidden_size
    n_dyn, n_stat = cell.weight_ih.shape[0], cell.weight_sh.shape[0]
    w_f, w_o, w_g = cell.weight_ih.detach().split(hs, dim=1)
    u_f, u_o, u_g = cell.weight_hh.detach().split(hs, dim=1)
    b_f, b_o, b_g = cell.bias.detach().split(hs)
    lstm = nn.LSTM(n_dyn + n_stat, hs, batch_first=True, device=cell.weight_ih.device)
    z_dyn = cell.weight_ih.new_zeros(hs, n_dyn)  # on the model's device: a CUDA model exports as it is
    z_stat = cell.weight_ih.new_zeros(hs, n_stat)
    z_hh = cell.weight_hh.new_zeros(hs, hs)
    weight_ih = torch.cat(
        [
            torch.cat([z_dyn, cell.weight_sh.detach().T], dim=1),  # i: statics only
            torch.cat([w_f.T, z_stat], dim=1),
            torch.cat([w_g.T, z_stat], dim=1),
            torch.cat([w_o.T, z_stat], dim=1),
        ]
    )
    lstm.load_state_dict(
        {
            "weight_ih_l0": weight_ih,
            "weight_hh_l0": torch.cat([z_hh, u_f.T, u_g.T, u_o.T]),  # i: no recurrence
            "bias_ih_l0": torch.cat([cell.bias_s.detach(), b_f, b_g, b_o]),
            "bias_hh_l0": cell.bias.new_zeros(4 * hs),
        }
    )
    fc = nn.Linear(hs, 1, device=cell.weight_ih.device)
    fc.load_state_dict(model.fc.state_dict())
    fast = FastEALSTM(lstm, fc, n_dyn)
    return fast.eval()


def for_inference(model: EALSTM, device: str | torch.device) -> nn.Module:
    """The fastest inference form of `model` on `device`, in eval mode: the fused `nn.LSTM` export on GPU
    (cuDNN), the EA-LSTM itself on CPU, whose gradient-free steps (`_run_without_grad`) ran 1.4x faster
    than `nn.LSTM` on CPU in benchmarks/bench_train.py."""
    model = model.eval().to(device)
    return to_fast_lstm(model) if torch.device(device).type == "cuda" else model
