"""Drift of LTEs: per user (how far an update moved a user's vector) and of the population
(how far the mean LTE moved from a reference).

**Population mean.** For each ``(basis_version, encoder)`` the refresher keeps the sum and
count of the current vectors of the users *it has written since its partitions were last
assigned* — kept exactly from what each store write returns: the new vector is added, the
replaced one subtracted if this refresher added it. "This refresher added it" is read off
the replaced entry itself: its ``stored_at`` is not earlier than the moment the assignment
began, and only the owner of a partition writes its users. The population therefore grows
towards every active user as windows move, restarts from empty on a rebalance, and with
several refreshers each one measures its own share of the users.

**Reference mean.** Either pinned, from a ``.npy`` file holding one float vector
(``--drift-reference``; used for every pair of that dimension), or, when none is pinned or
the dimension differs, the mean of the first ``--drift-reference-size`` non-empty vectors
this process writes for the pair, frozen from then on (so "drift since the process
started"). A pinned reference — e.g. the population mean saved when a model was trained —
is what makes the gauge comparable across restarts.

``lte_population_drift`` = 1 - cosine(population mean, reference mean); it is absent until
the reference exists.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from lte_core.errors import ConfigError
from lte_core.update import LTEUpdate
from lte_core.update_columns import UpdateColumns, vectors_of
from serving.metrics import RefresherMetrics
from serving.online_store import StoredLTE
from serving.store_format import Replaced

F32Array = npt.NDArray[np.float32]
F64Array = npt.NDArray[np.float64]
log = logging.getLogger(__name__)


def cosine_distance(a: npt.NDArray[np.floating], b: npt.NDArray[np.floating]) -> float | None:
    """``1 - cos(a, b)`` in float64, or ``None`` when either vector is zero or they differ
    in length (nothing meaningful to report)."""
    if a.shape != b.shape:
        return None
    a64 = a.astype(np.float64, copy=False)
    b64 = b.astype(np.float64, copy=False)
    norms = float(np.linalg.norm(a64)) * float(np.linalg.norm(b64))
    if norms == 0.0:
        return None
    return float(np.clip(1.0 - float(a64 @ b64) / norms, 0.0, 2.0))


def cosine_distances(pairs: list[tuple[F32Array, F32Array]]) -> list[float]:
    """:func:`cosine_distance` of many ``(a, b)`` pairs with a few numpy calls per vector
    length instead of several per pair (the refresher measures every write); pairs it would
    answer ``None`` for are left out."""
    by_length: dict[tuple[int, ...], list[tuple[F32Array, F32Array]]] = {}
    for a, b in pairs:
        if a.shape == b.shape:
            by_length.setdefault(a.shape, []).append((a, b))
    out: list[float] = []
    for group in by_length.values():
        a64 = np.stack([a for a, _ in group]).astype(np.float64)
        b64 = np.stack([b for _, b in group]).astype(np.float64)
        out.extend(_distances(a64, b64))
    return out


def cosine_distances_raw(pairs: list[tuple[bytes, bytes]]) -> list[float]:
    """:func:`cosine_distances` of pairs of little-endian float32 byte strings (the
    refresher's columns), one matrix per vector length."""
    by_length: dict[int, list[tuple[bytes, bytes]]] = {}
    for a, b in pairs:
        if len(a) == len(b):
            by_length.setdefault(len(a), []).append((a, b))
    out: list[float] = []
    for group in by_length.values():
        olds = vectors_of([a for a, _ in group])
        news = vectors_of([b for _, b in group])
        # float64 a block of rows at a time: a whole batch's float64 copies (~15 MB each
        # at 5,000 x d=384) cost more in allocation and cache misses than the arithmetic
        for start in range(0, len(group), _BLOCK_ROWS):
            block = slice(start, start + _BLOCK_ROWS)
            out.extend(_distances(olds[block].astype(np.float64), news[block].astype(np.float64)))
    return out


#: Rows per float64 block of :func:`cosine_distances_raw` (256 x d=384 x 8 bytes: 768 kB,
#: both blocks within the 1 MB L2 here; measured at 5,000 x d=384: 64 rows 4.1, 256 rows
#: 2.3-3.0, the whole batch 7.6 µs of CPU per pair). Rows are independent: any block size
#: gives the same bits.
_BLOCK_ROWS = 256


def _distances(a64: F64Array, b64: F64Array) -> list[float]:
    norms = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    dots = np.einsum("ij,ij->i", a64, b64)
    keep = norms != 0.0
    return list(np.clip(1.0 - dots[keep] / norms[keep], 0.0, 2.0).tolist())


def _sum64(rows: F32Array) -> F64Array:
    """The float64 sum of float32 rows, row after row as ``rows.astype(np.float64).sum(0)``
    adds them (the same bits), without the float64 copy of the whole matrix."""
    total: F64Array = np.add.reduce(rows, axis=0, dtype=np.float64)
    return total


def load_reference(path: Path) -> F64Array:
    """Read a pinned reference mean; the error names ``--drift-reference``."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--drift-reference: cannot read {path} as .npy: {exc}") from exc
    if loaded.ndim != 1 or loaded.size == 0 or not np.issubdtype(loaded.dtype, np.number):
        raise ConfigError(
            f"--drift-reference: {path} must hold one non-empty 1-D numeric vector, "
            f"got shape {loaded.shape} of {loaded.dtype}"
        )
    reference: F64Array = loaded.astype(np.float64)
    if not np.isfinite(reference).all() or not reference.any():
        raise ConfigError(f"--drift-reference: {path} must be finite and not all zero")
    return reference


@dataclass(slots=True)
class _Pair:
    total: F64Array | None = None
    count: int = 0
    reference: F64Array | None = None
    reference_total: F64Array | None = None
    reference_count: int = 0


class PopulationDrift:
    def __init__(
        self,
        metrics: RefresherMetrics,
        *,
        pinned: F64Array | None,
        reference_size: int,
        started_at: float,
    ) -> None:
        self._metrics = metrics
        self._pinned = pinned
        self._reference_size = reference_size
        self._since = started_at
        self._pairs: dict[tuple[str, str], _Pair] = {}

    def restart(self, at: float) -> None:
        """Forget the population (keep the references): partitions were reassigned at ``at``."""
        self._since = at
        for labels, pair in self._pairs.items():
            pair.total = None
            pair.count = 0
            self._metrics.population_users.labels(*labels).set(0)

    def observe(self, update: LTEUpdate, previous: StoredLTE | None) -> None:
        """Account one update that replaced ``previous`` in the store."""
        labels = (update.basis_version, update.encoder)
        pair = self._pairs.get(labels)
        if pair is None:
            pair = self._pairs[labels] = _Pair()
        if (
            previous is not None
            and previous.stored_at >= self._since
            and previous.update.vector is not None
            and pair.total is not None
            and pair.total.shape == previous.update.vector.shape
        ):
            pair.total -= previous.update.vector
            pair.count -= 1
        vector = update.vector
        if vector is None:
            return
        if pair.total is None or pair.total.shape != vector.shape:
            pair.total = np.zeros(vector.shape, dtype=np.float64)
            pair.count = 0
        pair.total += vector
        pair.count += 1
        if pair.reference is None:
            self._grow_reference(labels, pair, vector)

    def observe_batch(
        self,
        updates: UpdateColumns,
        applied: npt.NDArray[np.bool_],
        replaced: Replaced,
    ) -> None:
        """:meth:`observe` of every ``applied`` row in row order (the rows a store wrote or
        found equal), with one numpy sum per pair instead of one update per row.

        Equal to calling :meth:`observe` row by row (tested against it): a replaced vector is
        subtracted when this refresher added it (``stored_at`` since the assignment) and the
        pair's sum already existed at that row, which within the batch means it existed
        before or an earlier row of the pair added a vector."""
        pair_of, pairs = updates.pair_codes()
        vectors = updates.vector
        for code, labels in enumerate(pairs):
            rows = np.flatnonzero((pair_of == code) & applied).tolist()
            if not rows:
                continue
            new = [v for v in (vectors[i] for i in rows) if v is not None]
            if len({len(v) for v in new}) > 1:
                self._observe_rows(updates, rows, replaced)  # a dimension change: rare
                continue
            pair = self._pairs.get(labels)
            if pair is None:
                pair = self._pairs[labels] = _Pair()
            width = len(new[0]) if new else None
            had_total = pair.total is not None
            if width is not None and (pair.total is None or pair.total.size * 4 != width):
                had_total = False
            first_new = next((j for j, i in enumerate(rows) if vectors[i] is not None), len(rows))
            size = pair.total.size * 4 if had_total and pair.total is not None else width
            gone = [
                old
                for j, (old, when) in enumerate(
                    (replaced.vector[i], replaced.stored_at[i]) for i in rows
                )
                if old is not None
                and len(old) == size
                and when >= self._since
                and (had_total or j > first_new)
            ]
            if width is None:
                if gone and pair.total is not None:
                    pair.total -= _sum64(vectors_of(gone))
                    pair.count -= len(gone)
                continue
            if pair.total is None or pair.total.size * 4 != width:
                pair.total = np.zeros(width // 4, dtype=np.float64)
                pair.count = 0
            added = vectors_of(new)
            pair.total += _sum64(added)
            pair.count += len(new)
            if gone:
                pair.total -= _sum64(vectors_of(gone))
                pair.count -= len(gone)
            if pair.reference is None:
                self._grow_reference_batch(labels, pair, added)

    def _observe_rows(self, updates: UpdateColumns, rows: list[int], replaced: Replaced) -> None:
        for i in rows:
            old = replaced.vector[i]
            previous = None
            if old is not None:
                update = updates.row(i)
                stored = np.frombuffer(old, dtype="<f4").astype(np.float32)
                previous = StoredLTE(
                    replace(update, vector=stored, coefficients=stored),
                    float(replaced.stored_at[i]),
                )
            self.observe(updates.row(i), previous)

    def _grow_reference_batch(self, labels: tuple[str, str], pair: _Pair, added: F32Array) -> None:
        if self._pinned is not None and self._pinned.shape == added.shape[1:]:
            pair.reference = self._pinned
            return
        for vector in added:
            self._grow_reference(labels, pair, vector)
            if pair.reference is not None:
                return

    def _grow_reference(self, labels: tuple[str, str], pair: _Pair, vector: F32Array) -> None:
        if self._pinned is not None and self._pinned.shape == vector.shape:
            pair.reference = self._pinned
            return
        if self._pinned is not None and pair.reference_count == 0:
            log.warning(
                "--drift-reference has dimension %d but %s/%s vectors have %d; using the "
                "mean of the first %d updates instead",
                self._pinned.size,
                *labels,
                vector.size,
                self._reference_size,
            )
        if pair.reference_total is None or pair.reference_total.shape != vector.shape:
            pair.reference_total = np.zeros(vector.shape, dtype=np.float64)
            pair.reference_count = 0
        pair.reference_total += vector
        pair.reference_count += 1
        if pair.reference_count >= self._reference_size:
            pair.reference = pair.reference_total / pair.reference_count
            pair.reference_total = None

    def publish(self) -> None:
        for labels, pair in self._pairs.items():
            self._metrics.population_users.labels(*labels).set(pair.count)
            if pair.reference is None or pair.total is None or pair.count <= 0:
                continue
            drift = cosine_distance(pair.total, pair.reference)
            if drift is not None:
                self._metrics.population_drift.labels(*labels).set(drift)
