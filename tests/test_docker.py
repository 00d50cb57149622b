"""The Dockerfile, as far as it can be tested without a Docker engine: its structure and its two variants'
torch installs, and the package it installs (a wheel built from this tree) running its CLI as a non-root
user with a home of its own."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UID = 10001


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "") for ln in lines]


def test_dockerfile_runs_as_a_non_root_user_with_the_cli_as_entrypoint() -> None:
    steps = _instructions()
    kinds = [k for k, _ in steps]
    assert kinds[0] in ("ARG", "FROM") and "FROM" in kinds
    users = [a for k, a in steps if k == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert any(k == "RUN" and f"--uid {UID}" in a and users[-1] in a for k, a in steps)
    assert kinds.index("USER") > max(i for i, k in enumerate(kinds) if k == "RUN"), (
        "no RUN as root after USER"
    )
    assert ("ENTRYPOINT", '["somocloud"]') in steps
    copied = " ".join(a for k, a in steps if k == "COPY")
    for needed in ("pyproject.toml", "somocloud"):
        assert needed in copied


@pytest.mark.parametrize("variant", ["cpu", "cuda", "rocm"])
def test_variants_install_the_right_torch(variant: str) -> None:
    """The install RUN line under sh, with `pip` and `somocloud` as stand-ins that print their arguments."""
    (run,) = [a for k, a in _instructions() if k == "RUN" and "VARIANT" in a]
    stub = 'pip() { echo "pip $*"; }; somocloud() { echo "somocloud $*"; }; '
    env = {"PATH": os.environ["PATH"], "VARIANT": variant, "TORCH_VERSION": "2.13.0"}
    proc = subprocess.run(["sh", "-c", stub + run], env=env, capture_output=True, text=True)
    if variant == "rocm":
        assert proc.returncode == 2 and "VARIANT must be cpu or cuda" in proc.stderr
        return
    assert proc.returncode == 0, proc.stderr
    torch_line, package_line, check = proc.stdout.splitlines()
    assert "torch==2.13.0" in torch_line
    assert ("download.pytorch.org/whl/cpu" in torch_line) is (variant == "cpu")
    assert package_line == "pip install .[k8s]" and check == "somocloud --version"


@pytest.mark.slow
def test_installed_package_runs_the_cli_as_a_non_root_user() -> None:
    """Build the wheel from this tree (as `pip install .` does), install it alone, run the CLI as uid 10001."""
    with tempfile.TemporaryDirectory(prefix="somocloud-docker-") as tmp:  # pytest's tmp is root-only (0700)
        _run_installed(Path(tmp))


def _run_installed(tmp_path: Path) -> None:
    wheels, site, home = tmp_path / "wheels", tmp_path / "site", tmp_path / "home"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = wheels.glob("somocloud-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    home.mkdir()
    for path in (tmp_path, site, home):
        path.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(home, UID, UID)
    deps = sysconfig.get_paths()["purelib"]
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "PYTHONPATH": f"{site}{os.pathsep}{deps}"}
    as_user = ["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups"] if os.geteuid() == 0 else []
    # The dependencies are this checkout's environment; under a root-only folder (a `mktemp -d` clone)
    # uid 10001 cannot reach them. The CLI is then checked as this user and the uid part is skipped.
    unreachable = as_user and subprocess.run([*as_user, sys.executable, "-S", "-c", "import numpy"], env=env,
                                             cwd=home, capture_output=True).returncode != 0  # fmt: skip
    if unreachable:
        as_user = []

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*as_user, sys.executable, "-S", "-m", "somocloud", *args], env=env, cwd=home,
                              capture_output=True, text=True, timeout=300)  # fmt: skip

    whoami = subprocess.run([*as_user, "id", "-u"], capture_output=True, text=True, check=True).stdout.strip()
    assert whoami == str(UID) or os.geteuid() != 0 or unreachable
    helped = cli("--help")
    assert helped.returncode == 0, helped.stderr
    assert "extend" in helped.stdout and "predict" in helped.stdout
    shown = cli("config")  # the embedded demo config ships inside the wheel
    assert shown.returncode == 0, shown.stderr
    assert '"name": "somocloud-demo"' in shown.stdout
    assert str(site) in subprocess.run([*as_user, sys.executable, "-S", "-c", "import somocloud; print(somocloud.__file__)"],
                                       env=env, cwd=home, capture_output=True, text=True).stdout  # fmt: skip
    if unreachable:
        pytest.skip(
            f"{deps} is not reachable by uid {UID} (a root-only parent folder): checked as this user only"
        )
