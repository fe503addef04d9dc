"""A paced replay produces each record once the clock reaches its timestamp, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from streams.clock import Clock, SimulatedTime
from streams.replay import replay_on_clock


class TickingWall:
    """Wall time that moves ``step`` seconds each time it is read."""

    def __init__(self, step: float) -> None:
        self.t = 0.0
        self.step = step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


class RecordingSender:
    """Keeps what was sent and what the clock showed then (a pure unit: no broker)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.sent: list[tuple[Any, float]] = []

    async def send(self, topic: str, records: Sequence[Any]) -> None:
        shown = self.clock.now()
        self.sent.extend((r, shown) for r in records)


@given(
    st.lists(st.floats(0.0, 1000.0), min_size=1, max_size=60).map(sorted),
    st.floats(0.01, 5.0),
)
def test_each_record_goes_out_once_the_clock_reached_it(ts: list[float], step: float) -> None:
    clock = Clock(None, SimulatedTime(start=0.0, speed=10.0, anchor=0.0), wall=TickingWall(step))
    sender = RecordingSender(clock)
    records = [(b"k", str(i).encode()) for i in range(len(ts))]
    sent = asyncio.run(
        replay_on_clock(sender, "t", records, ts, clock, tick=0.0, max_batch=7)  # type: ignore[arg-type]
    )
    assert sent == len(records)
    assert [r for r, _ in sender.sent] == records
    assert all(shown >= t for (_, shown), t in zip(sender.sent, ts, strict=True))
