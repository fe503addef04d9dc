"""A batch of LTE updates as columns: the refresher's hot path, with no object per update.

The refresher decodes a fetched batch straight into these columns
(:func:`lte_core.update_avro.decode_columns`), coalesces them per key with a few numpy calls
(:func:`newest_per_key`), and hands them to the store, which builds its entries from the
columns and the raw little-endian float32 bytes the records carried. An
:class:`~lte_core.update.LTEUpdate` is built only where a reader needs one (a test, the
Feast push frame, :meth:`UpdateColumns.row`).

Vectors stay ``bytes`` (little-endian float32, as in the Avro record and the store entry):
building an entry is then a concatenation, and a consumer that wants numbers calls
``np.frombuffer`` once per batch and dimension.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lte_core.update import LTEUpdate

F32Array = npt.NDArray[np.float32]
F64Array = npt.NDArray[np.float64]
I64Array = npt.NDArray[np.int64]
_F32 = np.dtype("<f4")


@dataclass(frozen=True, slots=True)
class UpdateColumns:
    """``n`` updates, row ``i`` of every column being update ``i``.

    ``order`` is :meth:`LTEUpdate.order_key` as an ``(n, 3)`` float64 matrix (version
    components are integers below 2^53, exact in float64): ``(1, last_offset, end_bucket)``
    for versioned rows, ``(0, as_of, due_at)`` for rows without a version. ``vector`` and
    ``coefficients`` are little-endian float32 bytes, ``None`` on emptied windows
    (``n_events = 0``); with the identity basis ``coefficients[i]`` is ``vector[i]``.
    """

    user_id: list[str]
    basis_version: list[str]
    encoder: list[str]
    order: F64Array
    as_of: F64Array
    window_start: F64Array
    window_end: F64Array
    n_events: I64Array
    weight_sum: F64Array
    due_at: F64Array
    produced_at: F64Array
    vector: list[bytes | None]
    coefficients: list[bytes | None]

    def __len__(self) -> int:
        return len(self.user_id)

    @property
    def versioned(self) -> npt.NDArray[np.bool_]:
        return np.asarray(self.order[:, 0] == 1.0)

    @classmethod
    def of(cls, updates: Sequence[LTEUpdate]) -> UpdateColumns:
        """Columns of update objects (the JSON path, tests and tools)."""
        return cls(
            user_id=[u.user_id for u in updates],
            basis_version=[u.basis_version for u in updates],
            encoder=[u.encoder for u in updates],
            order=np.array([u.order_key() for u in updates], dtype=np.float64).reshape(-1, 3),
            as_of=_f64([u.as_of for u in updates]),
            window_start=_f64([u.window_start for u in updates]),
            window_end=_f64([u.window_end for u in updates]),
            n_events=np.array([u.n_events for u in updates], dtype=np.int64),
            weight_sum=_f64([u.weight_sum for u in updates]),
            due_at=_f64([u.due_at for u in updates]),
            produced_at=_f64([u.produced_at for u in updates]),
            vector=[_raw(u.vector) for u in updates],
            coefficients=[_raw(u.coefficients) for u in updates],
        )

    def take(self, rows: Sequence[int] | I64Array) -> UpdateColumns:
        """The rows ``rows``, in that order."""
        index = np.asarray(rows, dtype=np.int64)
        picked = index.tolist()
        return UpdateColumns(
            user_id=[self.user_id[i] for i in picked],
            basis_version=[self.basis_version[i] for i in picked],
            encoder=[self.encoder[i] for i in picked],
            order=self.order[index].reshape(-1, 3),
            as_of=self.as_of[index],
            window_start=self.window_start[index],
            window_end=self.window_end[index],
            n_events=self.n_events[index],
            weight_sum=self.weight_sum[index],
            due_at=self.due_at[index],
            produced_at=self.produced_at[index],
            vector=[self.vector[i] for i in picked],
            coefficients=[self.coefficients[i] for i in picked],
        )

    def row(self, i: int) -> LTEUpdate:
        """Row ``i`` as an update object (off the hot path)."""
        versioned = self.order[i, 0] == 1.0
        return LTEUpdate(
            user_id=self.user_id[i],
            basis_version=self.basis_version[i],
            encoder=self.encoder[i],
            as_of=float(self.as_of[i]),
            window_start=float(self.window_start[i]),
            window_end=float(self.window_end[i]),
            n_events=int(self.n_events[i]),
            weight_sum=float(self.weight_sum[i]),
            coefficients=_floats(self.coefficients[i]),
            vector=_floats(self.vector[i]),
            due_at=float(self.due_at[i]),
            produced_at=float(self.produced_at[i]),
            version=(int(self.order[i, 1]), int(self.order[i, 2])) if versioned else None,
        )

    def rows(self) -> list[LTEUpdate]:
        return [self.row(i) for i in range(len(self))]

    def pair_codes(self) -> tuple[I64Array, list[tuple[str, str]]]:
        """Per row, the index of its ``(basis_version, encoder)`` in the returned list (the
        distinct pairs, sorted). A dict lookup per row: a batch names a handful of pairs,
        and sorting thousands of numpy strings to find them cost more."""
        named = list(zip(self.basis_version, self.encoder, strict=True))
        pairs = sorted(set(named))
        code = {pair: i for i, pair in enumerate(pairs)}
        return np.fromiter(map(code.__getitem__, named), np.int64, len(named)), pairs

    def key_codes(self) -> I64Array:
        """Per row, an integer naming its ``(basis_version, encoder, user_id)``: equal codes,
        equal keys."""
        pair_of, _ = self.pair_codes()
        users: dict[str, int] = {}
        user_of = np.fromiter(
            (users.setdefault(u, len(users)) for u in self.user_id), np.int64, len(self)
        )
        return np.asarray(pair_of * len(self) + user_of, dtype=np.int64)


@dataclass(frozen=True, slots=True)
class Coalesced:
    """What :func:`newest_per_key` kept: ``rows`` (one per key, in the order of their first
    appearance) and how many rows it dropped as ``duplicates`` (the same order key as the
    kept one) and as ``stale`` (older)."""

    rows: I64Array
    duplicates: int
    stale: int


def newest_per_key(columns: UpdateColumns) -> Coalesced:
    """Per key, the row with the newest order key; on a tie the later row (the later record
    of the topic, which a replay also ends with). Sorting by (key, order key, row) puts each
    key's winner last in its run."""
    n = len(columns)
    if n == 0:
        return Coalesced(np.zeros(0, dtype=np.int64), 0, 0)
    keys = columns.key_codes()
    position = np.arange(n)
    by = np.lexsort((position, columns.order[:, 2], columns.order[:, 1], columns.order[:, 0], keys))
    sorted_keys = keys[by]
    last = np.ones(n, dtype=bool)
    last[:-1] = sorted_keys[1:] != sorted_keys[:-1]
    winners = by[last]
    # each row's key's winner, to tell duplicates (same order key) from stale rows
    run = np.cumsum(np.concatenate(([0], last[:-1].astype(np.int64))))
    winner_of = np.empty(n, dtype=np.int64)
    winner_of[by] = winners[run]
    losers = winner_of != position
    same = (columns.order == columns.order[winner_of]).all(axis=1)
    duplicates = int((losers & same).sum())
    first_seen = np.full(len(winners), n, dtype=np.int64)
    np.minimum.at(first_seen, run, by)
    kept = winners[np.argsort(first_seen, kind="stable")]
    return Coalesced(kept.astype(np.int64), duplicates, int(losers.sum()) - duplicates)


def vectors_of(raw: Sequence[bytes]) -> F32Array:
    """Equal-length float32 byte strings as one read-only ``(n, d)`` matrix (one copy: the
    join)."""
    if not raw:
        return np.zeros((0, 0), dtype=np.float32)
    width = len(raw[0]) // 4
    matrix: F32Array = np.frombuffer(b"".join(raw), dtype=_F32).reshape(len(raw), width)
    return matrix


def _f64(values: Sequence[float]) -> F64Array:
    return np.array(values, dtype=np.float64)


def _raw(values: F32Array | None) -> bytes | None:
    return None if values is None else np.ascontiguousarray(values, dtype=_F32).tobytes()


def _floats(raw: bytes | None) -> F32Array | None:
    return None if raw is None else np.frombuffer(raw, dtype=_F32).astype(np.float32)


__all__ = ["Coalesced", "UpdateColumns", "newest_per_key", "vectors_of"]
