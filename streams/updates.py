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
class OutgoingUpdate:
    key: bytes
    value: bytes
    due_at: float
    empty: bool


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
    ) -> list[OutgoingUpdate]:
        rows = np.flatnonzero(result.changed)
        if len(rows) == 0:
            return []
        due = self._due_list(result, rows, now, event_due)
        counts = result.summary.counts[rows]
        filled = rows[counts > 0]
        coefficients: dict[int, npt.NDArray[np.float32]] = {}
        vectors: dict[int, npt.NDArray[np.float32]] = {}
        if len(filled):
            encoded = self._encoder.encode(result.summary.rows(filled))
            coef32 = encoded.coefficients.astype(np.float32)
            vec32 = encoded.vectors.astype(np.float32)
            for j, i in enumerate(filled.tolist()):
                coefficients[i] = coef32[j]
                vectors[i] = vec32[j]
        g = self._spec.bucket
        ends = result.end[rows]
        starts = (ends - self._spec.n_buckets) * g
        produced_at = time.time()
        out: list[OutgoingUpdate] = []
        for j, i in enumerate(rows.tolist()):
            user = users[i]
            n_events = int(counts[j])
            doc = {
                "user_id": user.decode(),
                "basis_version": self._basis_version,
                "encoder": self._encoder.name,
                "as_of": now,
                "window_start": int(starts[j]),
                "window_end": int(ends[j] * g),
                "n_events": n_events,
                "weight_sum": float(result.summary.weight_sums[i]),
                "coefficients": coefficients.get(i),
                "vector": vectors.get(i),
                "due_at": due[j],
                "produced_at": produced_at,
            }
            out.append(
                OutgoingUpdate(
                    key=user,
                    value=orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY),
                    due_at=due[j],
                    empty=n_events == 0,
                )
            )
        return out

    def _due_list(
        self,
        result: EngineResult,
        rows: npt.NDArray[np.int64],
        now: float,
        event_due: npt.NDArray[np.float64] | None,
    ) -> list[float]:
        due: list[float] = self.due_at(result, rows, now, event_due).tolist()
        return due
