"""Build the ``lte-updates`` records (DESIGN 3.4) for the users whose window changed."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import orjson

from lte_core.encoders import Encoder
from lte_core.engine import NEVER, EngineResult
from lte_core.window import WindowSpec
from streams.clock import Clock


@dataclass(frozen=True, slots=True)
class UpdateBatch:
    """Records for ``lte-updates`` (key = user id) and, per record, when it became due."""

    records: list[tuple[bytes, bytes]]
    due_at: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.records)


NO_UPDATES = UpdateBatch([], np.empty(0))


class UpdateBuilder:
    def __init__(
        self, spec: WindowSpec, encoder: Encoder, basis_version: str, clock: Clock
    ) -> None:
        self._spec = spec
        self._encoder = encoder
        self._basis_version = basis_version
        self._clock = clock

    def due_at(
        self,
        result: EngineResult,
        rows: npt.NDArray[np.int64],
        now: float,
        event_due: npt.NDArray[np.float64] | None,
    ) -> npt.NDArray[np.float64]:
        """When each change became due: the earliest arrival of an event that moved the
        window, or the wall time the clock reached a window edge that moved it."""
        prev = result.prev_next_change[rows]
        clock_due = np.full(len(rows), np.inf)
        edge = (prev != NEVER) & (prev <= now)
        if self._clock.frozen:
            clock_due[edge] = self._clock.reached_at(0.0)
        else:
            clock_due[edge] = prev[edge].astype(np.float64)
        due = clock_due if event_due is None else np.minimum(clock_due, event_due[rows])
        return np.where(np.isfinite(due), due, time.time())

    def build(
        self,
        users: list[bytes],
        result: EngineResult,
        now: float,
        event_due: npt.NDArray[np.float64] | None = None,
    ) -> UpdateBatch:
        rows = np.flatnonzero(result.changed)
        if len(rows) == 0:
            return NO_UPDATES
        due = self.due_at(result, rows, now, event_due)
        counts = result.summary.counts[rows]
        filled = counts > 0
        coefficients: list[npt.NDArray[np.float32] | None] = [None] * len(rows)
        vectors: list[npt.NDArray[np.float32] | None] = [None] * len(rows)
        if filled.any():
            encoded = self._encoder.encode(result.summary.rows(rows[filled]))
            coef32 = encoded.coefficients.astype(np.float32)
            vec32 = encoded.vectors.astype(np.float32)
            for j, position in enumerate(np.flatnonzero(filled).tolist()):
                coefficients[position] = coef32[j]
                vectors[position] = vec32[j]
        g = self._spec.bucket
        ends = (result.end[rows] * g).tolist()
        starts = ((result.end[rows] - self._spec.n_buckets) * g).tolist()
        weight_sums = result.summary.weight_sums[rows].tolist()
        produced_at = time.time()
        basis_version, encoder = self._basis_version, self._encoder.name
        dumps, option = orjson.dumps, orjson.OPT_SERIALIZE_NUMPY
        records = [
            (
                users[i],
                dumps(
                    {
                        "user_id": users[i].decode(),
                        "basis_version": basis_version,
                        "encoder": encoder,
                        "as_of": now,
                        "window_start": start,
                        "window_end": end,
                        "n_events": n,
                        "weight_sum": weight_sum,
                        "coefficients": coef,
                        "vector": vec,
                        "due_at": due_at,
                        "produced_at": produced_at,
                    },
                    option=option,
                ),
            )
            for i, start, end, n, weight_sum, coef, vec, due_at in zip(
                rows.tolist(),
                starts,
                ends,
                counts.tolist(),
                weight_sums,
                coefficients,
                vectors,
                due.tolist(),
                strict=True,
            )
        ]
        return UpdateBatch(records, due)
