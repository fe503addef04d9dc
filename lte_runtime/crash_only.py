"""Crash-only supervision of a process's long-running work.

A background task that dies must take its process down, never leave it answering
``/healthz`` 200 while nothing progresses. :func:`supervised` runs a process's main
coroutine: its own deliberate errors (:class:`LTEError`) pass through with their message,
anything unexpected becomes :class:`TaskDiedError` with one line naming the task and the error,
so ``lte`` prints one line and exits 1 (the traceback is logged at debug level).
Transient outages are not handled here: the loops retry those with backoff, and count them.

:class:`Heartbeat` is the liveness side: a loop beats once per iteration, and ``/healthz``
fails when the last beat is older than the limit — a loop stuck in an await that never
returns is as dead as one that raised.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from typing import TypeVar

from lte_core.errors import LTEError
from lte_runtime.errors import TaskDiedError

T = TypeVar("T")
log = logging.getLogger(__name__)


async def supervised(name: str, work: Awaitable[T]) -> T:
    try:
        return await work
    except LTEError:
        raise
    except Exception as exc:
        log.debug("%s died", name, exc_info=True)
        raise TaskDiedError(
            f"{name} stopped: {type(exc).__name__}: {exc} (--log-level debug logs the traceback)"
        ) from exc


class Heartbeat:
    """When a loop last made progress; stale after ``limit`` seconds."""

    def __init__(self, name: str, limit: float) -> None:
        self.name = name
        self.limit = limit
        self._last = time.monotonic()

    def beat(self) -> None:
        self._last = time.monotonic()

    def liveness(self) -> tuple[bool, str]:
        age = time.monotonic() - self._last
        if age > self.limit:
            return False, f"{self.name} made no progress for {age:.0f}s (limit {self.limit:g}s)"
        return True, f"{self.name} alive"
