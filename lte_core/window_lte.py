"""The LTE fields of a batch of windows, as an ``lte-updates`` record states them (DESIGN 3.4).

One definition for the worker's update builder and for offline point-in-time reads
(``lte snapshot``): the window bounds in seconds, the count and weight total, and the
encoder's output rounded to float32, computed for non-empty windows only (an empty window
has no LTE: ``vector = null``). Keeping it in one place is what makes "the LTE a model
trained on" and "the LTE the stream served" the same numbers by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lte_core.encoders import Encoder
from lte_core.summary import WindowSummary
from lte_core.window import WindowSpec

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class WindowLTEs:
    """Row ``i`` describes window ``i``; ``coefficients`` and ``vectors`` have one row per
    entry of ``filled`` (the windows holding events). With the identity basis the encoders
    return one matrix for both, and so does this: ``coefficients is vectors``."""

    window_start: I64
    window_end: I64
    n_events: I64
    weight_sum: F64
    filled: I64
    coefficients: F32
    vectors: F32

    def __len__(self) -> int:
        return len(self.n_events)


def window_ltes(
    spec: WindowSpec, encoder: Encoder, summary: WindowSummary, end: I64, rows: I64
) -> WindowLTEs:
    """The LTE fields of windows ``rows`` of ``summary``, whose end buckets are ``end``."""
    counts = summary.counts[rows]
    filled = np.flatnonzero(counts > 0)
    if len(filled):
        encoded = encoder.encode(summary.rows(rows[filled]))
        vectors = encoded.vectors.astype(np.float32)
        coefficients = (
            vectors
            if encoded.coefficients is encoded.vectors
            else encoded.coefficients.astype(np.float32)
        )
    else:
        vectors = coefficients = np.empty((0, 0), dtype=np.float32)
    ends = end[rows].astype(np.int64)
    return WindowLTEs(
        window_start=(ends - spec.n_buckets) * spec.bucket,
        window_end=ends * spec.bucket,
        n_events=counts.astype(np.int64),
        weight_sum=summary.weight_sums[rows].astype(np.float64),
        filled=filled,
        coefficients=coefficients,
        vectors=vectors,
    )
