"""Crash points on the emit order, for the fault-injection tests only.

``LTE_TEST_CRASH_AT=<step>:<n>`` makes the worker exit at once (``os._exit``, no cleanup,
as a power cut would) the ``n``-th time batch processing reaches ``step``, one of
:data:`STEPS` — the points between the durable steps of
:mod:`streams.partition`'s emit order. ``<step>:<n>:raise`` raises :class:`InjectedFaultError`
there instead, as a bug would, to exercise the crash-only path (the worker must stop,
cancel its other partitions, close its stores and exit 1). Unset, :func:`crash_point` is a
no-op.
"""

from __future__ import annotations

import os
import sys

from lte_core.errors import ConfigError
from streams.errors import StreamsError

STEPS = ("after_updates", "after_changelog", "after_local_write", "before_ack")
#: The exit status of a provoked crash, so tests can tell it from a real failure.
CRASH_STATUS = 86
_VARIABLE = "LTE_TEST_CRASH_AT"


class InjectedFaultError(StreamsError):
    """The failure a test asked for with ``LTE_TEST_CRASH_AT=<step>:<n>:raise``."""


def _parse(text: str | None) -> tuple[str, int, bool] | None:
    if not text:
        return None
    step, _, rest = text.partition(":")
    count, _, mode = rest.partition(":")
    if step not in STEPS or not count.isdigit() or int(count) < 1 or mode not in ("", "raise"):
        raise ConfigError(
            f"{_VARIABLE}: expected <step>:<n>[:raise] with step one of {', '.join(STEPS)} "
            f"and n >= 1, got {text!r}"
        )
    return step, int(count), mode == "raise"


_target = _parse(os.environ.get(_VARIABLE))
_seen = 0


def crash_point(step: str) -> None:
    """Exit the process here if the test asked for a crash at this step, this time."""
    global _seen  # noqa: PLW0603 - one process, one crash plan
    if _target is None or _target[0] != step:
        return
    _seen += 1
    if _seen == _target[1]:
        if _target[2]:
            raise InjectedFaultError(f"injected failure at {step} #{_seen}")
        print(f"lte: provoked crash at {step} #{_seen}", file=sys.stderr, flush=True)
        os._exit(CRASH_STATUS)
