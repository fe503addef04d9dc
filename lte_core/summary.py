"""What encoders read of a batch of windows: running sums, not events.

Keeping encoders on O(d) sufficient statistics is what lets the worker emit an update
without reading a user's events: ``mean`` needs ``Σ w·v`` and ``Σ w``; ``recency`` needs
the same sums with every event's weight decayed by its age, which the engine maintains when
it is built with a half-life.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class WindowSummary:
    """Row ``i`` describes user ``i``'s window."""

    sums: F64
    weight_sums: F64
    counts: npt.NDArray[np.int64]
    decayed_sums: F64 | None = None
    decayed_weights: F64 | None = None

    def __len__(self) -> int:
        return len(self.counts)

    def rows(self, idx: npt.NDArray[np.int64]) -> WindowSummary:
        return WindowSummary(
            sums=self.sums[idx],
            weight_sums=self.weight_sums[idx],
            counts=self.counts[idx],
            decayed_sums=None if self.decayed_sums is None else self.decayed_sums[idx],
            decayed_weights=None if self.decayed_weights is None else self.decayed_weights[idx],
        )

    @classmethod
    def concat(cls, parts: list[WindowSummary]) -> WindowSummary:
        """Rows of several summaries, in order (decayed sums kept only if all have them)."""
        d_sums = [p.decayed_sums for p in parts]
        d_weights = [p.decayed_weights for p in parts]
        decayed = bool(parts) and all(x is not None for x in d_sums + d_weights)
        return cls(
            sums=np.concatenate([p.sums for p in parts]),
            weight_sums=np.concatenate([p.weight_sums for p in parts]),
            counts=np.concatenate([p.counts for p in parts]),
            decayed_sums=np.concatenate([x for x in d_sums if x is not None]) if decayed else None,
            decayed_weights=np.concatenate([x for x in d_weights if x is not None])
            if decayed
            else None,
        )
