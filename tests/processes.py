"""Running the real CLI in its own session and killing it midway: shared by the kill tests.

`Runner` starts `python -m somocloud <verb> -c <config>` with `start_new_session=True`; `kill_midway`
SIGKILLs the whole session once enough task markers exist and checks that no process of it survives."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from somocloud import stores


def _session_of(proc: psutil.Process) -> int | None:
    try:
        return os.getsid(proc.pid)
    except OSError:
        return None


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    """The processes that still run (a zombie nobody reaps is dead)."""
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            continue
    return out


def session_members(sid: int) -> list[psutil.Process]:
    """Every running process of session `sid` (the CLI, its nanny, worker, resource tracker, ...)."""
    return alive([p for p in psutil.process_iter() if p.pid != os.getpid() and _session_of(p) == sid])


def family(popen: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """The CLI process, its descendants and whatever else runs in its session."""
    procs = {p.pid: p for p in session_members(popen.pid)}
    try:
        root = psutil.Process(popen.pid)
        for p in [root, *root.children(recursive=True)]:
            procs.setdefault(p.pid, p)
    except psutil.NoSuchProcess:
        pass
    return list(procs.values())


def wait_gone(procs: list[psutil.Process], timeout: float = 15.0) -> list[psutil.Process]:
    """The processes of `procs` still running after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while (left := alive(procs)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


class Runner:
    """Starts the CLI in new sessions; kills whatever of them is left at teardown."""

    def __init__(self, workdir: Path, verb: str) -> None:
        self.workdir = workdir
        self.verb = verb
        self.started: list[tuple[subprocess.Popen[bytes], list[psutil.Process]]] = []
        self.n = 0

    def start(self, config: Path) -> tuple[subprocess.Popen[bytes], Path]:
        self.n += 1
        log = self.workdir / f"cli-{self.n}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "somocloud", self.verb, "-c", str(config), "--no-progress"],
                cwd=self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started.append((popen, []))
        return popen, log

    def remember(self, popen: subprocess.Popen[bytes], procs: list[psutil.Process]) -> None:
        for p, known in self.started:
            if p is popen:
                known.extend(procs)

    def run(self, config: Path) -> str:
        """Run the CLI to completion; its output. Fails on a non-zero exit or a process left behind."""
        popen, log = self.start(config)
        try:
            rc = popen.wait(timeout=150)
        except subprocess.TimeoutExpired:
            self.remember(popen, family(popen))
            os.killpg(popen.pid, signal.SIGKILL)
            pytest.fail(f"somocloud {self.verb} did not finish in 150 s:\n{tail(log)}")
        output = log.read_text()
        assert rc == 0, f"somocloud {self.verb} exited {rc}:\n{tail(log)}"
        left = wait_gone(session_members(popen.pid))
        self.remember(popen, left)
        assert not left, f"processes left after a finished run: {describe(left)}"
        return output

    def cleanup(self) -> None:
        for popen, known in self.started:
            for p in alive(family(popen) + known):
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.kill()
            if popen.poll() is None:
                popen.kill()
            popen.wait(timeout=30)


def tail(log: Path, n: int = 4000) -> str:
    return log.read_text(errors="replace")[-n:]


def describe(procs: list[psutil.Process]) -> str:
    out = []
    for p in procs:
        try:
            out.append(f"{p.pid} {' '.join(p.cmdline())[:200]}")
        except psutil.Error:
            out.append(str(p.pid))
    return "; ".join(out)


def marker_state(markers: stores.Markers) -> dict[str, tuple[bytes, int, int]]:
    """Each marker's bytes, modification time (ns) and inode: a rewrite changes the time."""
    out = {}
    for task_id in markers.finished():
        path = Path(markers.url(task_id))
        st = path.stat()
        out[task_id] = (path.read_bytes(), st.st_mtime_ns, st.st_ino)
    return out


def store_files(url: str) -> dict[str, bytes]:
    out = {}
    for dirpath, _, files in os.walk(url):
        for f in files:
            path = Path(dirpath, f)
            out[os.path.relpath(path, url)] = path.read_bytes()
    return out


def kill_midway(
    runner: Runner, config: Path, markers: stores.Markers, trigger: int, total: int
) -> tuple[bool, set[str], str]:
    """Start the CLI and SIGKILL its session once `trigger` tasks are marked.

    Returns whether the kill landed with some but not all of the `total` tasks marked, the marked tasks
    after the kill, and what happened (for the failure message)."""
    popen, log = runner.start(config)
    seen: list[psutil.Process] = []
    killed = False
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline and popen.poll() is None:
        if len(markers.finished()) >= trigger:
            seen = family(popen)
            os.killpg(popen.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.02)
    if popen.poll() is None and not killed:
        os.killpg(popen.pid, signal.SIGKILL)
    rc = popen.wait(timeout=30)
    runner.remember(popen, seen)
    survivors = wait_gone([*seen, *session_members(popen.pid)])
    assert not survivors, f"processes survived SIGKILL of the session: {describe(survivors)}"
    if killed:  # the CLI had its Dask worker process(es) running when it was killed
        assert len(seen) >= 2, f"only {describe(seen)} ran in the killed session"
    done = markers.finished()
    midway = killed and rc == -signal.SIGKILL and 0 < len(done) < total
    why = f"trigger {trigger}: killed={killed}, exit {rc}, {len(done)} of {total} tasks marked"
    if not killed:
        why += f"\n{tail(log)}"
    return midway, done, why


@contextlib.contextmanager
def running(workdir: Path, verb: str) -> Iterator[Runner]:
    """A `Runner` of `somocloud <verb>` whose leftover processes are killed on exit."""
    r = Runner(workdir, verb)
    try:
        yield r
    finally:
        r.cleanup()
