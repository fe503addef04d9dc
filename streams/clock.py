"""The worker's clock: wall time, or a frozen ``--now`` for replays and backfills."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Clock:
    """``now()`` is the window clock T. ``reached_at(t)`` is the wall time at which the clock
    reached ``t``: the moment a change became due, which updates carry as ``due_at`` so
    that staleness (store write - due) means the same for live and frozen clocks."""

    frozen_at: float | None = None
    started_at: float = 0.0

    @classmethod
    def create(cls, frozen_at: float | None) -> Clock:
        return cls(frozen_at=frozen_at, started_at=time.time())

    @property
    def frozen(self) -> bool:
        return self.frozen_at is not None

    def now(self) -> float:
        return time.time() if self.frozen_at is None else self.frozen_at

    def reached_at(self, t: float) -> float:
        if self.frozen_at is None:
            return t
        return self.started_at
