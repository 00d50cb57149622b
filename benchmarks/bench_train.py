"""EA-LSTM training throughput: somocloud against neuralhydrology 1.13 on the same CPU (or GPU).

    .venv/bin/python benchmarks/bench_train.py [--device cpu|cuda] [--threads N] [--batch 256]
        [--seq 365] [--hidden 128] [--warmup W] [--steps K] [--infer-steps K] [--reps N]
        [--infer-batch B] [--budget S] [--nh-python /tmp/nh-venv/bin/python] [--no-nh] [--profile]
        [--deterministic]

A training sample is one window of `--seq` days; samples/s = batch x steps / seconds.

* somocloud: `somocloud.model.ealstm.EALSTM(6, 10, hidden, dropout=0.5, initial_forget_bias=5)`, the step of
  `somocloud.train.train_member`: zero_grad, NSE* loss (`somocloud.train.nse_star_loss`, ε 0.05),
  finiteness check, backward, gradient-norm clip 1.0, Adam (lr 1e-3) step, the loss read back.
* neuralhydrology 1.13: its `modelzoo.ealstm.EALSTM` built from a minimal `Config` (6 dynamic inputs,
  10 static attributes, hidden, output_dropout 0.5, initial_forget_bias 5, 1 target, regression head,
  predict_last_n 1), the step of its `BaseTrainer._train_epoch` without logging/progress bar:
  pre_model_hook, forward, its own `MaskedNSELoss` (last step only, ε 0.1), NaN check, zero_grad,
  backward, clip 1.0, Adam (lr 1e-3) step, `loss.item()`. Inputs in the 1.12+ layout: `x_d` a dict of
  per-feature [B, T, 1] tensors, `x_s` [B, 10], `y` [B, T, 1], `per_basin_target_stds` [B, 1, 1].
  It runs in its own interpreter (`--nh-python`, a separate venv so that it never touches .venv):
      python3.11 -m venv /tmp/nh-venv && /tmp/nh-venv/bin/pip install torch==2.13.0 neuralhydrology==1.13.0

Both sides get random tensors of the same values, already on the device (data loading and host→device
copies are not timed), the same torch thread count (`--threads`, default: all cores) and run in their own
worker process. Forward-only (inference, eval mode, `no_grad`) samples/s is also measured for somocloud's
EA-LSTM, for `to_fast_lstm(model)` (the fused `nn.LSTM`, cuDNN on GPU) and for NH's EA-LSTM.

Each measurement = `--steps` (or `--infer-steps`) consecutive steps timed together (the device is
synchronised before reading the clock); `--warmup` untimed steps first; the median of `--reps` repetitions
is printed, with the cores each worker kept busy (process CPU seconds / wall seconds: below `--threads`
means other jobs took the CPU). Repetitions of the two sides alternate (order reversed every round) so that
load from other jobs on a shared machine hits both; after the first round, no new round starts once the
timed part would pass `--budget` seconds (CPU default 120 s, so that a very slow side still finishes in
minutes; the number of repetitions made is printed). `--profile` adds per-phase times (forward+loss, backward, clip,
optimiser step) for both sides and a torch.profiler table of one somocloud step.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

N_DYNAMIC = 6
N_STATIC = 10
DROPOUT = 0.5
FORGET_BIAS = 5.0
LEARNING_RATE = 1e-3
GRAD_CLIP = 1.0
SOMO_EPSILON = 0.05  # somocloud's default train.nse_epsilon (m3 m-3); NH's MaskedNSELoss uses 0.1
DEFAULT_NH_PYTHON = "/tmp/nh-venv/bin/python"
TAG = "@@ "  # prefix of protocol lines on a worker's stdout

# ----------------------------------------------------------------------------------------------------
# Worker side (runs under .venv for somocloud, under --nh-python for neuralhydrology; stdlib + torch)


def _send(msg: dict[str, Any]) -> None:
    sys.stdout.write(TAG + json.dumps(msg) + "\n")
    sys.stdout.flush()


class _Side:
    """One implementation: a training model with its optimiser and loss, and forward-only callables."""

    def __init__(self, net: Any, loss: Any, infer: dict[str, Any], info: dict[str, Any]):
        import torch

        self.net = net
        self.loss = loss  # () -> scalar loss tensor (forward + loss)
        self.infer = infer  # mode -> () -> predictions
        self.info = info
        self.params = list(net.parameters())
        self.optimiser = torch.optim.Adam(self.params, lr=LEARNING_RATE)


def _inputs(args: argparse.Namespace, batch: int, device: Any) -> tuple[Any, ...]:
    """The same random values on both sides: x_d (B, T, 6), x_s (B, 10), y (B,), per-cell std (B,)."""
    import torch

    g = torch.Generator().manual_seed(args.seed)
    xd = torch.randn(batch, args.seq, N_DYNAMIC, generator=g)
    xs = torch.randn(batch, N_STATIC, generator=g)
    y = torch.randn(batch, generator=g)
    std = 0.02 + 0.08 * torch.rand(batch, generator=g)
    return tuple(t.to(device) for t in (xd, xs, y, std))


def _somocloud_side(args: argparse.Namespace, device: Any) -> _Side:
    import torch

    from somocloud.model.ealstm import EALSTM, to_fast_lstm
    from somocloud.train import nse_star_loss

    net = EALSTM(N_DYNAMIC, N_STATIC, args.hidden, DROPOUT, FORGET_BIAS)
    fast = to_fast_lstm(net).to(device)  # exported on CPU: to_fast_lstm builds its zero blocks there
    net = net.to(device)
    xd, xs, y, std = _inputs(args, args.batch, device)
    xdi, xsi, _, _ = _inputs(args, args.infer_batch, device)

    def loss() -> Any:
        return nse_star_loss(net(xd, xs), y, std, SOMO_EPSILON)

    def infer() -> Any:
        with torch.no_grad():
            return net(xdi, xsi)

    def infer_fast() -> Any:
        with torch.no_grad():
            return fast(xdi, xsi)

    return _Side(
        net, loss, {"infer": infer, "fast": infer_fast}, {"loss": f"nse_star_loss, eps {SOMO_EPSILON}"}
    )


def _nh_config(args: argparse.Namespace) -> Any:
    from neuralhydrology.utils.config import Config

    return Config(
        {
            "model": "ealstm",
            "head": "regression",
            "hidden_size": args.hidden,
            "output_dropout": DROPOUT,
            "initial_forget_bias": FORGET_BIAS,
            "dynamic_inputs": [f"dyn{k}" for k in range(N_DYNAMIC)],
            "static_attributes": [f"stat{k}" for k in range(N_STATIC)],
            "target_variables": ["sm"],
            "seq_length": args.seq,
            "predict_last_n": 1,
            "loss": "nse",
        }
    )


def _nh_batch(args: argparse.Namespace, batch: int, device: Any) -> dict[str, Any]:
    """NH 1.12+ batch layout: x_d is a dict of contiguous per-feature [B, T, 1] tensors."""
    xd, xs, y, std = _inputs(args, batch, device)
    y_seq = y[:, None, None].expand(batch, args.seq, 1).contiguous()  # the loss reads the last step only
    return {
        "x_d": {f"dyn{k}": xd[..., k : k + 1].contiguous() for k in range(N_DYNAMIC)},
        "x_s": xs,
        "y": y_seq,
        "per_basin_target_stds": std[:, None, None].contiguous(),
    }


def _nh_side(args: argparse.Namespace, device: Any) -> _Side:
    from importlib.metadata import version

    import torch
    from neuralhydrology.modelzoo.ealstm import EALSTM
    from neuralhydrology.training.loss import MaskedNSELoss

    cfg = _nh_config(args)
    net = EALSTM(cfg).to(device)
    loss_obj = MaskedNSELoss(cfg)
    data = _nh_batch(args, args.batch, device)
    data_infer = _nh_batch(args, args.infer_batch, device)

    def loss() -> Any:
        d = net.pre_model_hook(data, is_train=True)
        return loss_obj(net(d), d)[0]

    def infer() -> Any:
        with torch.no_grad():
            return net(net.pre_model_hook(data_infer, is_train=False))["y_hat"][:, -1]

    info = {"neuralhydrology": version("neuralhydrology"), "loss": "MaskedNSELoss (last step), eps 0.1"}
    return _Side(net, loss, {"infer": infer}, info)


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train_step(side: _Side) -> float:
    import torch

    side.optimiser.zero_grad()
    loss = side.loss()
    if not torch.isfinite(loss):
        raise FloatingPointError("non-finite loss")
    loss.backward()
    torch.nn.utils.clip_grad_norm_(side.params, GRAD_CLIP)
    side.optimiser.step()
    return float(loss.detach())


def _run(side: _Side, mode: str, steps: int, device: Any) -> tuple[float, float]:
    """Wall and process CPU seconds of `steps` consecutive steps of `mode` (train, infer, fast)."""
    side.net.train(mode == "train")
    _sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    if mode == "train":
        for _ in range(steps):
            _train_step(side)
    else:
        fn = side.infer[mode]
        for _ in range(steps):
            fn()
    _sync(device)
    return time.perf_counter() - start, time.process_time() - cpu


def _phases(side: _Side, steps: int, device: Any) -> dict[str, float]:
    """Median seconds per phase of a training step, the device synchronised between phases."""
    import torch

    side.net.train()
    times: dict[str, list[float]] = {"forward+loss": [], "backward": [], "clip": [], "optimiser": []}
    for _ in range(steps):
        side.optimiser.zero_grad()
        _sync(device)
        t0 = time.perf_counter()
        loss = side.loss()
        _sync(device)
        t1 = time.perf_counter()
        loss.backward()
        _sync(device)
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(side.params, GRAD_CLIP)
        _sync(device)
        t3 = time.perf_counter()
        side.optimiser.step()
        _sync(device)
        t4 = time.perf_counter()
        for key, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            times[key].append(dt)
    return {k: statistics.median(v) for k, v in times.items()}


def _profile_table(side: _Side, device: Any, rows: int) -> str:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    side.net.train()
    with profile(activities=activities) as prof:
        _train_step(side)
        _sync(device)
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return str(prof.key_averages().table(sort_by=key, row_limit=rows))


def _peak_memory(device: Any) -> dict[str, float]:
    import resource

    import torch

    out = {"max_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    if device.type == "cuda":
        out["cuda_max_allocated_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def worker(args: argparse.Namespace) -> None:
    """Serve commands from stdin: `run MODE STEPS`, `phases STEPS`, `profile ROWS`, `memory`, `quit`."""
    try:
        import torch

        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"torch {torch.__version__} in {sys.executable} has no CUDA device")
        torch.set_num_threads(args.threads)
        if args.deterministic:
            torch.use_deterministic_algorithms(True)
        torch.manual_seed(args.seed)
        side = _somocloud_side(args, device) if args.worker == "somocloud" else _nh_side(args, device)
    except Exception as exc:  # reported to the driver, which skips this side
        _send({"error": f"{type(exc).__name__}: {exc}"})
        return
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in side.params),
        **side.info,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        info["cudnn_enabled"] = bool(torch.backends.cudnn.enabled)
    _send({"ready": info})
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        if cmd[0] == "run":
            wall, cpu = _run(side, cmd[1], int(cmd[2]), device)
            _send({"seconds": wall, "cpu": cpu})
        elif cmd[0] == "phases":
            _send({"phases": _phases(side, int(cmd[1]), device)})
        elif cmd[0] == "profile":
            _send({"table": _profile_table(side, device, int(cmd[1]))})
        elif cmd[0] == "memory":
            _send({"memory": _peak_memory(device)})


# ----------------------------------------------------------------------------------------------------
# Driver


class Worker:
    """A worker process speaking the line protocol above."""

    def __init__(self, name: str, python: str, args: argparse.Namespace):
        self.name = name
        cmd = [python, "-u", str(Path(__file__).resolve()), "--worker", name]
        for opt in ("device", "threads", "batch", "seq", "hidden", "infer_batch", "seed"):
            cmd += [f"--{opt.replace('_', '-')}", str(getattr(args, opt))]
        if args.deterministic:
            cmd.append("--deterministic")
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
        if args.deterministic and args.device == "cuda":
            env.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.info: dict[str, Any] = {}

    def receive(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(TAG):
                msg: dict[str, Any] = json.loads(line[len(TAG) :])
                return msg
            sys.stderr.write(f"[{self.name}] {line}")
        raise RuntimeError(f"{self.name} worker exited (code {self.proc.wait()})")

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.receive()

    def start(self) -> str | None:
        """None when ready, else why not."""
        try:
            msg = self.receive()
        except RuntimeError as exc:
            return str(exc)
        if "error" in msg:
            self.proc.wait()
            return str(msg["error"])
        self.info = msg["ready"]
        return None

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _fmt_rate(values: list[float]) -> str:
    return f"{statistics.median(values):9.0f}  ({min(values):.0f}-{max(values):.0f})"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads, both sides")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--seq", type=int, default=365)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--infer-batch", type=int, default=None, help="forward-only batch (default: --batch)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per measurement (cpu 1, cuda 5)")
    p.add_argument("--steps", type=int, default=None, help="training steps per repetition (cpu 1, cuda 20)")
    p.add_argument(
        "--infer-steps", type=int, default=None, help="forward steps per repetition (cpu 3, cuda 50)"
    )
    p.add_argument("--reps", type=int, default=7, help="timed repetitions; the median is reported")
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        help="stop the repetitions (after the first) when the next would end past this many seconds of timing"
        " (cpu 120, cuda 0 = none)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nh-python", default=DEFAULT_NH_PYTHON, help="interpreter with neuralhydrology 1.13")
    p.add_argument("--no-nh", action="store_true", help="measure somocloud only")
    p.add_argument("--profile", action="store_true", help="per-phase times and a torch.profiler table")
    p.add_argument(
        "--deterministic", action="store_true", help="torch.use_deterministic_algorithms(True) on both sides"
    )
    p.add_argument("--worker", choices=("somocloud", "nh"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if args.infer_batch is None:
        args.infer_batch = args.batch
    if args.warmup is None:
        args.warmup = 5 if cuda else 1
    if args.steps is None:
        args.steps = 20 if cuda else 1
    if args.infer_steps is None:
        args.infer_steps = 50 if cuda else 3
    if args.budget is None:
        args.budget = 0.0 if cuda else 120.0
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    t_start = time.monotonic()
    load0 = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} cores, {_cpu_model()}; device {args.device}; torch threads {args.threads}; "
        f"load average {load0[0]:.2f} / {load0[1]:.2f} / {load0[2]:.2f} (1/5/15 min) at start"
    )
    print(
        f"batch {args.batch}, sequence {args.seq}, hidden {args.hidden}, inference batch {args.infer_batch}; "
        f"warm-up {args.warmup} steps, median of {args.reps} x {args.steps} training steps "
        f"/ {args.infer_steps} forward steps"
    )

    workers: list[Worker] = []
    somo = Worker("somocloud", sys.executable, args)
    problem = somo.start()
    if problem:
        raise SystemExit(f"somocloud worker failed: {problem}")
    workers.append(somo)
    nh: Worker | None = None
    if args.no_nh:
        print("neuralhydrology side skipped (--no-nh)")
    elif not Path(args.nh_python).exists():
        print(
            f"neuralhydrology side skipped: {args.nh_python} not found. Create it (separate venv, torch pinned):\n"
            "    python3.11 -m venv /tmp/nh-venv && "
            "/tmp/nh-venv/bin/pip install torch==2.13.0 neuralhydrology==1.13.0"
        )
    else:
        nh = Worker("nh", args.nh_python, args)
        problem = nh.start()
        if problem:
            print(f"neuralhydrology side skipped: {args.nh_python}: {problem}")
            nh = None
        else:
            workers.append(nh)
    for w in workers:
        print(f"{w.name}: " + ", ".join(f"{k} {v}" for k, v in w.info.items()))

    jobs: list[tuple[Worker, str, int, int]] = [(somo, "train", args.steps, args.batch)]
    if nh:
        jobs.append((nh, "train", args.steps, args.batch))
    jobs += [
        (somo, "infer", args.infer_steps, args.infer_batch),
        (somo, "fast", args.infer_steps, args.infer_batch),
    ]
    if nh:
        jobs.append((nh, "infer", args.infer_steps, args.infer_batch))
    rates: dict[tuple[str, str], list[float]] = {(w.name, m): [] for w, m, _, _ in jobs}
    cores: dict[tuple[str, str], list[float]] = {(w.name, m): [] for w, m, _, _ in jobs}
    try:
        for w, mode, _, _ in jobs:
            if args.warmup:
                t0 = time.monotonic()
                w.ask(f"run {mode} {args.warmup}")
                print(f"warm-up {w.name} {mode}: {time.monotonic() - t0:.1f} s", flush=True)
        t_timed = time.monotonic()
        for r in range(args.reps):
            t_round = time.monotonic()
            for w, mode, steps, batch in jobs if r % 2 == 0 else jobs[::-1]:
                reply = w.ask(f"run {mode} {steps}")
                rates[(w.name, mode)].append(batch * steps / reply["seconds"])
                cores[(w.name, mode)].append(reply["cpu"] / reply["seconds"])
            print(
                f"round {r + 1}: "
                + ", ".join(
                    f"{n} {m} {v[-1]:.0f}/s ({cores[(n, m)][-1]:.1f} cores)" for (n, m), v in rates.items()
                ),
                flush=True,
            )
            now = time.monotonic()
            if args.budget and r + 1 < args.reps and now - t_timed + (now - t_round) > args.budget:
                print(f"stopping after {r + 1} of {args.reps} repetitions (--budget {args.budget:g} s)")
                break
        phases = {w.name: w.ask(f"phases {args.steps}")["phases"] for w in workers} if args.profile else {}
        table = somo.ask("profile 15")["table"] if args.profile else ""
        memory = {w.name: w.ask("memory")["memory"] for w in workers}
    finally:
        for w in workers:
            w.close()
    load1 = os.getloadavg()

    labels = {
        ("somocloud", "train"): "somocloud EA-LSTM, train step",
        ("nh", "train"): "neuralhydrology 1.13 EA-LSTM, train step",
        ("somocloud", "infer"): "somocloud EA-LSTM, forward only",
        ("somocloud", "fast"): "somocloud to_fast_lstm (nn.LSTM), forward only",
        ("nh", "infer"): "neuralhydrology 1.13 EA-LSTM, forward only",
    }
    n_done = len(rates[("somocloud", "train")])
    print(
        f"\nsamples/s on {args.device}, median (min-max) of {n_done}; cores busy per worker (CPU s / wall s)"
    )
    for key, values in rates.items():
        print(f"  {labels[key]:<48} {_fmt_rate(values)}  {statistics.median(cores[key]):.1f}")
    med = {k: statistics.median(v) for k, v in rates.items()}
    if ("nh", "train") in med:
        ratio = med[("somocloud", "train")] / med[("nh", "train")]
        print(f"  training speed, somocloud / neuralhydrology:      {ratio:.2f}x (goal >= 1.5x)")
    print(
        f"  forward only, to_fast_lstm / EA-LSTM loop:        {med[('somocloud', 'fast')] / med[('somocloud', 'infer')]:.2f}x"
    )
    if ("nh", "infer") in med:
        print(
            f"  forward only, somocloud / neuralhydrology:        {med[('somocloud', 'infer')] / med[('nh', 'infer')]:.2f}x"
        )
    for name, mem in memory.items():
        print(f"  peak memory {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in mem.items()))
    for name, ph in phases.items():
        total = sum(ph.values())
        parts = ", ".join(f"{k} {1000 * v:.0f} ms ({100 * v / total:.0f} %)" for k, v in ph.items())
        print(f"  phases of a train step, {name} (median of {args.steps}): {parts}")
    if table:
        print("\ntorch.profiler, one somocloud training step:\n" + table)
    print(
        f"load average {load1[0]:.2f} / {load1[1]:.2f} / {load1[2]:.2f} at end (includes this benchmark); "
        f"wall {time.monotonic() - t_start:.0f} s"
    )


if __name__ == "__main__":
    main()
