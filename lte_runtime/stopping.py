"""Ending a child process: a signal, a grace period, then SIGKILL.

The embedded broker, the Redis server and the supervised ``lte`` children all end this way;
one definition keeps them from drifting apart (e.g. one of them forgetting to reap the
process after SIGKILL and leaving a zombie behind).
"""

from __future__ import annotations

import signal
import subprocess


def end_process(
    process: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM, timeout: float = 10.0
) -> None:
    """Send ``sig`` unless it already exited; SIGKILL if it is still running after
    ``timeout`` seconds. Always reaps the process."""
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
