"""Crash points on the emit order, for the fault-injection tests only.

``LTE_TEST_CRASH_AT=<step>:<n>`` makes the worker exit at once (``os._exit``, no cleanup,
as a power cut would) the ``n``-th time batch processing reaches ``step``, one of
:data:`STEPS` — the points between the durable steps of
:mod:`streams.partition`'s emit order. Unset, :func:`crash_point` is a no-op.
"""

from __future__ import annotations

import os
import sys

from lte_core.errors import ConfigError

STEPS = ("after_updates", "after_changelog", "after_local_write", "before_ack")
#: The exit status of a provoked crash, so tests can tell it from a real failure.
CRASH_STATUS = 86
_VARIABLE = "LTE_TEST_CRASH_AT"


def _parse(text: str | None) -> tuple[str, int] | None:
    if not text:
        return None
    step, _, count = text.partition(":")
    if step not in STEPS or not count.isdigit() or int(count) < 1:
        raise ConfigError(
            f"{_VARIABLE}: expected <step>:<n> with step one of {', '.join(STEPS)} and n >= 1, "
            f"got {text!r}"
        )
    return step, int(count)


_target = _parse(os.environ.get(_VARIABLE))
_seen = 0


def crash_point(step: str) -> None:
    """Exit the process here if the test asked for a crash at this step, this time."""
    global _seen  # noqa: PLW0603 - one process, one crash plan
    if _target is None or _target[0] != step:
        return
    _seen += 1
    if _seen == _target[1]:
        print(f"lte: provoked crash at {step} #{_seen}", file=sys.stderr, flush=True)
        os._exit(CRASH_STATUS)
