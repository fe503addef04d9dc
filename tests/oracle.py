"""Brute-force reference for the window maths, written independently of ``lte_core``.

Exact rational arithmetic decides bucket membership; means are recomputed from scratch.
Nothing here reuses the product's incremental code paths.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Ev:
    item: int
    ts: float
    weight: float
    offset: int = -1


@dataclass(frozen=True)
class Spec:
    window: int
    lag: int
    bucket: int


def bucket_of(ts: float, g: int) -> int:
    return int(Fraction(ts) // g)


def bounds(spec: Spec, clock: float) -> tuple[int, int]:
    end = int((Fraction(clock) - spec.lag) // spec.bucket)
    return end - spec.window // spec.bucket, end


def in_window(spec: Spec, clock: float, events: Iterable[Ev]) -> list[Ev]:
    start, end = bounds(spec, clock)
    return [e for e in events if start <= bucket_of(e.ts, spec.bucket) < end]


def is_late(spec: Spec, clock: float, ev: Ev) -> bool:
    start, _ = bounds(spec, clock)
    return bucket_of(ev.ts, spec.bucket) < start


def weighted_sum(
    events: Sequence[Ev], vectors: npt.NDArray[np.float32]
) -> tuple[npt.NDArray[np.float64], float]:
    d = vectors.shape[1]
    total = np.zeros(d, dtype=np.float64)
    weight = 0.0
    for e in events:
        total += e.weight * vectors[e.item].astype(np.float64)
        weight += e.weight
    return total, weight


def weighted_mean(
    events: Sequence[Ev], vectors: npt.NDArray[np.float32]
) -> npt.NDArray[np.float64]:
    total, weight = weighted_sum(events, vectors)
    return total / weight


def next_change(spec: Spec, clock: float, events: Sequence[Ev]) -> int | None:
    """Smallest bucket-edge clock time after ``clock`` at which membership differs,
    found by scanning edges one by one."""
    if not events:
        return None
    _, end = bounds(spec, clock)
    now = {id(e) for e in in_window(spec, clock, events)}
    last = max(bucket_of(e.ts, spec.bucket) for e in events) + spec.window // spec.bucket + 2
    for k in range(end + 1, last + 1):
        t = k * spec.bucket + spec.lag
        if {id(e) for e in in_window(spec, t, events)} != now:
            return t
    return None
