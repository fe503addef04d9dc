"""Lagged-window arithmetic (DESIGN 3.2), shared by the state, the sweeper and the tests.

With bucket size ``G``, ``b(t) = floor(t / G)``. At clock ``T`` the window is the half-open
bucket range ``[end - W/G, end)`` with ``end = b(T - L)``. Everything is done on integer
buckets so that "is this event in the window" has exactly one answer, whatever the float
rounding of a timestamp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lte_core.duration import format_duration, parse_duration
from lte_core.errors import ConfigError

#: Relative bucket offsets are stored as int32 in the state (see ``lte_core.state``).
MAX_RELATIVE_BUCKETS = 2**31 - 1


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """Window ``W``, lag ``L`` and bucket ``G``, in whole seconds."""

    window: int
    lag: int
    bucket: int

    def __post_init__(self) -> None:
        if self.bucket < 1:
            raise ConfigError(f"bucket: must be at least 1s, got {self.bucket}s")
        if self.window < self.bucket:
            raise ConfigError(
                f"window: must be at least one bucket ({format_duration(self.bucket)}), "
                f"got {format_duration(self.window)}"
            )
        if self.window % self.bucket:
            raise ConfigError(
                f"window: {format_duration(self.window)} is not a whole number of buckets of "
                f"{format_duration(self.bucket)}; choose a bucket that divides the window"
            )
        if self.lag < 0:
            raise ConfigError(f"lag: must not be negative, got {self.lag}s")
        if self.window // self.bucket > MAX_RELATIVE_BUCKETS // 4:
            raise ConfigError(
                f"bucket: {format_duration(self.bucket)} is too fine for a "
                f"{format_duration(self.window)} window (more than 2^29 buckets)"
            )

    @classmethod
    def parse(cls, window: str, lag: str, bucket: str) -> WindowSpec:
        return cls(
            window=parse_duration(window, field="window"),
            lag=parse_duration(lag, field="lag"),
            bucket=parse_duration(bucket, field="bucket"),
        )

    @property
    def n_buckets(self) -> int:
        return self.window // self.bucket

    def bucket_of(self, ts: float) -> int:
        """``floor(ts / G)`` computed exactly (the float quotient can round across an edge)."""
        g = self.bucket
        q = math.floor(ts / g)
        if q * g > ts:
            q -= 1
        elif (q + 1) * g <= ts:
            q += 1
        return q

    def bucket_of_array(self, ts: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        """Vectorised :meth:`bucket_of`. Callers keep ``|ts|`` below 2^53 seconds."""
        g = float(self.bucket)
        q = np.floor(ts / g)
        q -= q * g > ts
        q += (q + 1.0) * g <= ts
        return q.astype(np.int64)

    def end_bucket(self, now: float) -> int:
        """First bucket *not* in the window at clock ``now``."""
        return self.bucket_of(now - self.lag)

    def end_buckets(self, now: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        """Vectorised :meth:`end_bucket`."""
        return self.bucket_of_array(np.asarray(now, dtype=np.float64) - self.lag)

    def start_bucket(self, now: float) -> int:
        return self.end_bucket(now) - self.n_buckets

    def enter_time(self, bucket: int) -> int:
        """Earliest clock time at which events of ``bucket`` are inside the window."""
        return (bucket + 1) * self.bucket + self.lag

    def leave_time(self, bucket: int) -> int:
        """Earliest clock time at which events of ``bucket`` have left the window."""
        return (bucket + self.n_buckets + 1) * self.bucket + self.lag

    def edge_at_or_after(self, now: float) -> int:
        """The first clock time ``>= now`` at which any window can change (a bucket edge)."""
        k = math.ceil((now - self.lag) / self.bucket)
        while k * self.bucket + self.lag < now:
            k += 1
        while (k - 1) * self.bucket + self.lag >= now:
            k -= 1
        return k * self.bucket + self.lag

    def describe(self) -> str:
        return (
            f"window={format_duration(self.window)} lag={format_duration(self.lag)} "
            f"bucket={format_duration(self.bucket)}"
        )
