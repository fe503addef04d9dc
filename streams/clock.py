"""The worker's clock: wall time, a frozen ``--now``, or a simulated clock that runs faster.

Three modes, one rule for what updates carry as ``due_at``: it is always the **wall-clock
instant** at which the change became due (``reached_at``). So ``lte_staleness_seconds``
(store write time - ``due_at``, measured by the refresher with its own wall clock) is in real
seconds under every mode, and the refresher needs no clock settings of its own.

* **wall** (default): ``now()`` is ``time.time()``; a due time *is* a wall instant.
* **frozen** (``--now``): ``now()`` never moves; every edge the clock passed became due when
  the process started.
* **simulated** (``--clock-start``/``--clock-speed``/``--clock-anchor``/``--clock-end``, see
  :class:`SimulatedTime`): time-compressed replays. Processes started at different moments
  agree because the formula depends only on the wall clock and the four numbers, which every
  process is given alike; an edge at simulated time ``t`` became due at the wall instant the
  simulated clock reached ``t``, which converts simulated delays into real ones (÷ speed).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lte_core.errors import ConfigError

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class SimulatedTime:
    """``now = start + speed x max(0, wall - anchor)``, held at ``end`` once it gets there.

    ``start`` is the simulated Unix time at the wall instant ``anchor`` (Unix seconds; the
    entry point defaults it to when the process started). Before the anchor the clock holds
    at ``start``, so a launcher can start processes first and pass an anchor a little in the
    future: every process then starts ticking at the same instant. ``end`` (optional) stops
    the clock for good — the end of a replay — so a run converges to a well-defined state.
    """

    start: float
    speed: float
    anchor: float
    end: float | None = None

    def __post_init__(self) -> None:
        for flag, value in (("--clock-start", self.start), ("--clock-anchor", self.anchor)):
            if not math.isfinite(value):
                raise ConfigError(f"{flag}: must be a finite Unix time, got {value}")
        if not (math.isfinite(self.speed) and self.speed > 0):
            raise ConfigError(f"--clock-speed: must be a positive number, got {self.speed}")
        if self.end is not None and not (math.isfinite(self.end) and self.end >= self.start):
            raise ConfigError(
                f"--clock-end: must be a finite Unix time not before --clock-start "
                f"({self.start}), got {self.end}"
            )

    def at(self, wall: float) -> float:
        """The simulated time at wall instant ``wall``."""
        now = self.start + self.speed * max(0.0, wall - self.anchor)
        return now if self.end is None else min(now, self.end)

    def wall_at(self, t: F64) -> F64:
        """The wall instants the clock reaches the simulated times ``t`` (a time before
        ``start`` maps before the anchor, as it would have on a clock running since then)."""
        if self.end is not None:
            t = np.minimum(t, self.end)
        out: F64 = self.anchor + (t - self.start) / self.speed
        return out


class Clock:
    """``now()`` is the window clock T and never goes backwards within a process (a wall clock
    stepped back by NTP holds it). ``reached_at(t)`` is the wall time at which the clock
    reached the clock times ``t``: the moment a change became due, which updates carry as
    ``due_at`` so that staleness (store write - due) is real time for every mode."""

    __slots__ = ("_high", "frozen_at", "simulated", "started_at", "wall")

    def __init__(
        self,
        frozen_at: float | None = None,
        simulated: SimulatedTime | None = None,
        *,
        started_at: float = 0.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.frozen_at = frozen_at
        self.simulated = simulated
        self.started_at = started_at
        self.wall = wall
        self._high = -math.inf

    @classmethod
    def create(cls, frozen_at: float | None, simulated: SimulatedTime | None = None) -> Clock:
        return cls(frozen_at, simulated, started_at=time.time())

    @property
    def frozen(self) -> bool:
        return self.frozen_at is not None

    def now(self) -> float:
        if self.frozen_at is not None:
            return self.frozen_at
        wall = self.wall()
        now = wall if self.simulated is None else self.simulated.at(wall)
        self._high = max(self._high, now)
        return self._high

    def reached_at(self, t: F64) -> F64:
        if self.frozen_at is not None:
            return np.full(len(t), self.started_at)
        if self.simulated is not None:
            return self.simulated.wall_at(t)
        return t
