"""Build the ``lte-updates`` records (DESIGN 3.4) for the users whose window changed."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import orjson

from lte_core.encoders import Encoder
from lte_core.engine import NEVER, EngineResult
from lte_core.update_avro import FlushColumns, encode_columns
from lte_core.window import WindowSpec
from lte_core.window_lte import WindowLTEs, window_ltes
from streams.clock import Clock


@dataclass(frozen=True, slots=True)
class UpdateBatch:
    """Records for ``lte-updates`` (key = user id) and, per record, when it became due."""

    records: list[tuple[bytes, bytes]]
    due_at: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.records)


NO_UPDATES = UpdateBatch([], np.empty(0))


#: ``--update-format`` choices: Avro single-object records (docs/contracts.md §4b), or JSON.
UPDATE_FORMATS = ("avro", "json")


class UpdateBuilder:
    def __init__(
        self,
        spec: WindowSpec,
        encoder: Encoder,
        basis_version: str,
        clock: Clock,
        update_format: str = "avro",
    ) -> None:
        if update_format not in UPDATE_FORMATS:
            raise ValueError(f"update format {update_format!r} is not one of {UPDATE_FORMATS}")
        self._spec = spec
        self._encoder = encoder
        self._basis_version = basis_version
        self._clock = clock
        self._avro = update_format == "avro"

    def due_at(
        self,
        result: EngineResult,
        rows: npt.NDArray[np.int64],
        now: float,
        event_due: npt.NDArray[np.float64] | None,
    ) -> npt.NDArray[np.float64]:
        """When each change became due: the earliest arrival of an event that moved the
        window, or the wall time the clock reached a window edge that moved it (both wall
        instants under every clock, so staleness is real time)."""
        prev = result.prev_next_change[rows]
        clock_due = np.full(len(rows), np.inf)
        edge = (prev != NEVER) & (prev <= now)
        clock_due[edge] = self._clock.reached_at(prev[edge].astype(np.float64))
        due = clock_due if event_due is None else np.minimum(clock_due, event_due[rows])
        return np.where(np.isfinite(due), due, time.time())

    def build(
        self,
        users: list[bytes],
        result: EngineResult,
        now: float,
        event_due: npt.NDArray[np.float64] | None = None,
    ) -> UpdateBatch:
        """One record per user whose window changed, Avro
        (:func:`~lte_core.update_avro.encode_columns`) or JSON (:data:`UPDATE_TEMPLATE`).

        Vectors of the whole flush are formatted by one ``orjson`` call and split into rows
        (float text never contains ``],[``); with the identity basis the coefficients are
        the vector, so its text is reused. This is a third of the cost of one ``dumps`` of
        a dict per update, and a test checks the bytes decode exactly like
        :func:`lte_core.update.encode_update`'s.
        """
        rows = np.flatnonzero(result.changed)
        if len(rows) == 0:
            return NO_UPDATES
        due = self.due_at(result, rows, now, event_due)
        lte = window_ltes(self._spec, self._encoder, result.summary, result.end, rows)
        if self._avro:
            return self._build_avro(users, result, rows, lte=lte, now=now, due=due)
        coef_text: list[bytes] = [b"null"] * len(rows)
        vec_text: list[bytes] = [b"null"] * len(rows)
        if len(lte.filled):
            vectors = _rows_json(lte.vectors)
            coefficients = (
                vectors if lte.coefficients is lte.vectors else _rows_json(lte.coefficients)
            )
            for j, position in enumerate(lte.filled.tolist()):
                vec_text[position] = vectors[j]
                coef_text[position] = coefficients[j]
        ends = lte.window_end.tolist()
        starts = lte.window_start.tolist()
        dumps = orjson.dumps
        head = b'"basis_version":%b,"encoder":%b,"as_of":%b' % (
            dumps(self._basis_version),
            dumps(self._encoder.name),
            dumps(now),
        )
        tail = b',"produced_at":%b}' % dumps(time.time())
        # the user's version (docs/contracts.md): last applied offset, then window end
        offsets = result.last_offset[rows].tolist()
        records = [
            (
                users[i],
                UPDATE_TEMPLATE
                % (
                    dumps(users[i].decode()),
                    head,
                    start,
                    end,
                    n,
                    dumps(w),
                    coef,
                    vec,
                    dumps(due_at),
                    last_offset,
                    end_bucket,
                    tail,
                ),
            )
            for i, start, end, n, w, coef, vec, due_at, last_offset, end_bucket in zip(
                rows.tolist(),
                starts,
                ends,
                lte.n_events.tolist(),
                lte.weight_sum.tolist(),
                coef_text,
                vec_text,
                due.tolist(),
                offsets,
                result.end[rows].tolist(),
                strict=True,
            )
        ]
        return UpdateBatch(records, due)

    def _build_avro(
        self,
        users: list[bytes],
        result: EngineResult,
        rows: npt.NDArray[np.int64],
        *,
        lte: WindowLTEs,
        now: float,
        due: npt.NDArray[np.float64],
    ) -> UpdateBatch:
        keys = [users[i] for i in rows.tolist()]
        values = encode_columns(
            FlushColumns(
                user_ids=keys,
                # the user's version (docs/contracts.md): last applied offset, then window end
                last_offset=result.last_offset[rows],
                end_bucket=result.end[rows],
                as_of=now,
                window_start=lte.window_start.astype(np.float64),
                window_end=lte.window_end.astype(np.float64),
                n_events=lte.n_events.astype(np.int64),
                weight_sum=lte.weight_sum.astype(np.float64),
                due_at=due,
                produced_at=time.time(),
            ),
            basis_version=self._basis_version,
            encoder=self._encoder.name,
            vectors=lte.vectors,
            coefficients=None if lte.coefficients is lte.vectors else lte.coefficients,
            filled=lte.filled.tolist(),
        )
        return UpdateBatch(list(zip(keys, values, strict=True)), due)


#: An ``lte-updates`` value (DESIGN 3.4); ``%b`` fields are JSON already.
UPDATE_TEMPLATE = (
    b'{"user_id":%b,%b,"window_start":%d,"window_end":%d,"n_events":%d,"weight_sum":%b,'
    b'"coefficients":%b,"vector":%b,"due_at":%b,"version":[%d,%d]%b'
)


def _rows_json(matrix: npt.NDArray[np.float32]) -> list[bytes]:
    """Each row of ``matrix`` as a JSON array of numbers."""
    text = orjson.dumps(matrix, option=orjson.OPT_SERIALIZE_NUMPY)
    return [b"[" + row + b"]" for row in text[2:-2].split(b"],[")]
