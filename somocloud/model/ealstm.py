"""The Entity-Aware LSTM of SoMo.ml (Kratzert et al. 2019 paper code, as used by SoMo.ml v1).

    i   = σ(x_s W_s + b_s)                    once per sequence, from the statics only
    f, o, g = x_t W_ih + h_{t-1} W_hh + b     one fused matmul, chunk order (f, o, g)
    c_t = σ(f) c_{t-1} + i tanh(g);  h_t = σ(o) tanh(c_t);  zero initial state
    ŷ   = fc(dropout(h_T))                    one dense head on the last step

Parameter names and shapes follow the published checkpoint (`lstm.weight_ih` (n_dyn, 3H),
`lstm.weight_hh` (H, 3H), `lstm.weight_sh` (n_stat, H), `lstm.bias` (3H), `lstm.bias_s` (H), `fc.*`).
`to_fast_lstm` exports the same parameters to a `torch.nn.LSTM` fed [dynamic, static] inputs (cuDNN on
GPU): input-gate rows see only the statics and have no recurrent weights.
"""

from __future__ import annotations

import torch
from torch import nn


class EALSTMCell(nn.Module):
    """The recurrent part; returns the hidden state of every step."""

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

    def forward(self, x_d: torch.Tensor, x_s: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """x_d (batch, time, n_dynamic), x_s (batch, n_static) → h (batch, time, hidden), or the last
        step's h (batch, hidden) with `last_only`."""
        batch, _, _ = x_d.shape
        hs = self.hidden_size
        h = x_d.new_zeros(batch, hs)
        c = x_d.new_zeros(batch, hs)
        i = torch.sigmoid(torch.addmm(self.bias_s, x_s, self.weight_sh))
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
        return h if last_only else torch.stack(out, dim=1)


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

    def forward(self, x_d: torch.Tensor, x_s: torch.Tensor) -> torch.Tensor:
        """x_d (batch, time, n_dynamic), x_s (batch, n_static) → (batch,) standardised prediction."""
        h_last = self.lstm(x_d, x_s, last_only=True)
        return self.fc(self.dropout(h_last)).squeeze(-1)


class FastEALSTM(nn.Module):
    """The same function on the fused `nn.LSTM` kernel, for inference (see `to_fast_lstm`)."""

    def __init__(self, lstm: nn.LSTM, fc: nn.Linear, n_dynamic: int):
        super().__init__()
        self.lstm = lstm
        self.fc = fc
        self.n_dynamic = n_dynamic

    def forward(self, x_d: torch.Tensor, x_s: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x_d, x_s.unsqueeze(1).expand(-1, x_d.shape[1], -1)], dim=2)
        _, (h_n, _) = self.lstm(x)
        return self.fc(h_n[-1]).squeeze(-1)


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
