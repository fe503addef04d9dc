"""Child processes of a local stack (``lte demo``, benchmarks): started in their own session
so one Ctrl-C reaches only the parent, which stops them in order; and tied to the parent's
life (Linux ``PR_SET_PDEATHSIG``) so a killed parent leaves no orphans behind."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

from lte_runtime.stopping import end_process

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Child:
    """``python -m lte_cli <args>`` with its output in ``log``."""

    def __init__(
        self, name: str, args: list[str], log: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "lte_cli", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
            )

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> None:
        end_process(self.process, signal.SIGTERM, timeout)


class Supervisor:
    """Stops children in the reverse order they were started."""

    def __init__(self) -> None:
        self.children: list[Child] = []

    def start(
        self, name: str, args: list[str], log: Path, env: dict[str, str] | None = None
    ) -> Child:
        child = Child(name, args, log, env)
        self.children.append(child)
        return child

    def stop_all(self) -> None:
        for child in reversed(self.children):
            child.stop()
        self.children.clear()
