"""Create the project's virtual environment and install the project into it.

Used by ``scripts/demo`` and ``scripts/test`` so that a machine with only Python 3.11+ can
run either with one command. The install is skipped when ``pyproject.toml`` has not changed
since the last one (a hash stamp inside the venv).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("LTE_VENV", ROOT / ".venv"))
BIN = VENV / "bin"


def _say(message: str) -> None:
    print(f"[setup] {message}", file=sys.stderr, flush=True)


def ensure_venv(extras: str) -> Path:
    """Return the venv's python, creating and (re)installing it when needed."""
    if sys.version_info < (3, 11):  # noqa: UP036 - this runs under any system python
        sys.exit(f"Python 3.11+ is required, this is {sys.version.split()[0]}")
    python = BIN / "python"
    if not python.exists():
        _say(f"creating virtual environment {VENV}")
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    wanted = {e for e in extras.split(",") if e}
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    stamp = VENV / ".lte-installed"
    have_digest, _, have_extras = (
        stamp.read_text().partition("\n") if stamp.exists() else ("", "", "")
    )
    have = {e for e in have_extras.split(",") if e}
    # An install with more extras serves a command that needs fewer (the demo after the tests).
    if have_digest != digest or not wanted <= have:
        installed = wanted if have_digest != digest else wanted | have
        spec = f"{ROOT}[{','.join(sorted(installed))}]" if installed else str(ROOT)
        _say(f"installing {spec.replace(str(ROOT), 'lte-stream')} (first run takes a while)")
        pip = [str(python), "-m", "pip", "--disable-pip-version-check"]
        subprocess.run([*pip, "install", "--quiet", "--upgrade", "pip"], check=True)
        subprocess.run([*pip, "install", "--quiet", "-e", spec], check=True, cwd=ROOT)
        stamp.write_text(f"{digest}\n{','.join(sorted(installed))}")
    return python


def run(argv: list[str], **env: str) -> int:
    """Run a command with the venv's bin first on PATH; return its exit status."""
    full_env = {**os.environ, **env, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.call(argv, cwd=ROOT, env=full_env)


def ensure_prometheus() -> None:
    """The deploy tests run the real ``prometheus`` and ``promtool``: Debian's package,
    installed here when missing (CI machines start without it)."""
    import shutil  # noqa: PLC0415

    if shutil.which("promtool") and shutil.which("prometheus"):
        return
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        _say(
            "prometheus is missing and cannot be installed here (needs root and apt-get); "
            "install Debian's 'prometheus' package"
        )
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}

    def apt_get(*args: str) -> int:
        return subprocess.call([apt, "-y", "-q", *args], stdout=subprocess.DEVNULL, env=env)

    _say("installing Debian's prometheus package (promtool + prometheus)")
    install = ("install", "--no-install-recommends", "prometheus")
    if apt_get(*install) != 0 and (apt_get("update") != 0 or apt_get(*install) != 0):
        sys.exit("could not install Debian's prometheus package")
