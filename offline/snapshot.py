"""Point-in-time LTEs: for many ``(user, t)`` pairs, the LTE the stream served at ``t``
(DESIGN 3.5b).

A model trains on the LTE of each example's time and is later served the stream's LTE; the
two must be the same numbers, or training and serving disagree. So this is not a second
implementation of the window: it runs the stream's own :class:`~lte_core.engine.WindowEngine`
and encoders and states the result with the worker's arithmetic
(:func:`~lte_core.window_lte.window_ltes`).

How the engine is fed. The stream's window at clock ``T`` holds the events with
``start <= b(ts) < end`` -- the events that arrived in time (an event that arrives after
it left is ``late`` and never counts). Offline every event of the log is known up front, so
the log itself is the window store: :class:`LogWindowStore` serves the engine's range reads
from the log sorted by ``(user, bucket, file order)``, and every user starts with all of
its events *pending* behind the clock (as if delivered early). Moving the clock then makes
events enter and leave exactly as the worker's sweeper does, and nothing is copied: memory
is the log's columns plus one head (O(d)) per user.

One pass. Pairs are sorted by time per user and deduplicated by window end bucket (pairs in
the same end bucket share a window); the k-th clock of every user is advanced in one engine
call (windows of different users are independent, and the engine takes one clock per user),
split into calls that move a bounded number of events. Each event is read once when it
enters and once when it leaves, whatever the number of pairs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from lte_core.basis import BasisArtifact
from lte_core.encoders import EncoderSpec, build_encoder
from lte_core.engine import (
    EngineResult,
    EventColumns,
    RangeRequests,
    RangeResult,
    WindowEngine,
)
from lte_core.errors import LTEError
from lte_core.head import NO_BUCKET, Heads, serialise_heads
from lte_core.window import WindowSpec
from lte_core.window_lte import window_ltes
from offline.datasets import InteractionLog

logger = logging.getLogger(__name__)

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]

#: Events one engine call may move (enter + leave), bounding its float64 scratch memory.
EVENTS_PER_CALL = 1 << 15
#: Users one engine call may advance, bounding the heads it decodes at once.
USERS_PER_CALL = 1 << 15


class SnapshotError(LTEError):
    """Point-in-time LTEs cannot be computed from these inputs; the message says why."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One row per requested ``(user, t)`` pair, in request order, with the fields of the
    ``lte-updates`` record the stream would have served at ``t`` (``as_of = t``).
    ``coefficients`` and ``vectors`` are NaN rows where the window is empty (the stream
    sends ``vector = null`` there); with the identity basis (K = d) they are one and the
    same array, as in the stream's updates. ``unknown_items`` counts log events skipped
    because the basis does not know their item (the worker dead-letters those)."""

    basis_version: str
    encoder: str
    window: WindowSpec
    user_ids: npt.NDArray[np.str_]
    as_of: F64
    window_start: F64
    window_end: F64
    n_events: I64
    weight_sum: F64
    coefficients: F32
    vectors: F32
    unknown_items: int = 0

    def __len__(self) -> int:
        return len(self.user_ids)


def overlapping(snapshot: Snapshot, sequence_start: F64) -> npt.NDArray[np.bool_]:
    """Rows whose LTE window ends after the example's short-term sequence begins.

    Such an LTE covers part of the horizon the sequence model is trained to predict from
    (and, causally, its targets): training on it leaks what serving will not have. The
    rule is ``window_end <= sequence_start`` (DESIGN 3.5b)."""
    start = np.asarray(sequence_start, dtype=np.float64)
    if start.shape != snapshot.window_end.shape:
        raise ValueError("sequence_start must have one entry per snapshot row")
    return np.asarray(snapshot.window_end > start, dtype=np.bool_)


@dataclass(frozen=True, slots=True)
class _UserLog:
    """The known events of a log, sorted by ``(user, bucket, file order)``; user ``u``
    owns rows ``seg[u]:seg[u+1]``. ``key = u·span + bucket - low`` sorts the same way and
    makes every range read one ``searchsorted``."""

    user_ids: npt.NDArray[np.str_]
    seg: I64
    key: I64
    bucket: I64
    item: npt.NDArray[np.uint32]
    weight: F32
    offset: I64
    span: int
    low: int
    unknown_items: int

    @classmethod
    def build(
        cls, events: InteractionLog, basis: BasisArtifact, spec: WindowSpec, source: str
    ) -> _UserLog:
        if len(events) == 0:
            raise SnapshotError(f"{source}: the log holds no events")
        item_ids, item_of = _distinct(events.item_ids)
        rows = basis.rows_of(item_ids)[item_of]
        known = rows >= 0
        unknown = int(len(rows) - np.count_nonzero(known))
        if unknown == len(rows):
            raise SnapshotError(
                f"{source}: none of its {len(rows):,} events has an item of basis "
                f"{basis.basis_version}; is it the basis the log's items were embedded for?"
            )
        offset = np.flatnonzero(known).astype(np.int64)
        user_list, user = _distinct(events.user_ids[known] if unknown else events.user_ids)
        user_ids = np.asarray(user_list, dtype=np.str_)
        bucket = spec.bucket_of_array(events.ts[known].astype(np.float64))
        low = int(bucket.min()) - 1
        span = int(bucket.max()) - low + 2
        if span * len(user_ids) >= 2**62:
            raise SnapshotError(
                f"{source}: {span:,} buckets of {spec.bucket}s for {len(user_ids):,} users is "
                "too fine a bucket for this log; use a coarser --bucket"
            )
        key = user * span + (bucket - low)
        order = np.argsort(key, kind="stable")
        seg = np.zeros(len(user_ids) + 1, dtype=np.int64)
        np.cumsum(np.bincount(user, minlength=len(user_ids)), out=seg[1:])
        return cls(
            user_ids=user_ids,
            seg=seg,
            key=key[order],
            bucket=bucket[order],
            item=rows[known][order].astype(np.uint32),
            weight=events.weights[known][order].astype(np.float32),
            offset=offset[order],
            span=span,
            low=low,
            unknown_items=unknown,
        )

    def users_of(self, user_ids: npt.NDArray[np.str_]) -> I64:
        """Each id's user index, -1 for users the log does not know."""
        import pyarrow.compute as pc  # noqa: PLC0415

        found = pc.index_in(_arrow_strings(user_ids), value_set=_arrow_strings(self.user_ids))
        return np.asarray(found.fill_null(-1).to_numpy(), dtype=np.int64)

    def position(self, users: I64, buckets: I64) -> I64:
        """Per ``(user, bucket)``: the first row of that user at or after that bucket."""
        local = np.clip(buckets, self.low, self.low + self.span - 1) - self.low
        return np.searchsorted(self.key, users * self.span + local, side="left").astype(np.int64)


def _arrow_strings(values: npt.NDArray[np.str_]) -> Any:
    import pyarrow as pa  # noqa: PLC0415

    strings = pa.array(values, type=pa.large_string())
    if isinstance(strings, pa.ChunkedArray):  # big inputs may convert in chunks
        strings = strings.combine_chunks()
    return strings


def _distinct(values: npt.NDArray[np.str_]) -> tuple[list[str], I64]:
    """The distinct strings (in order of first appearance) and each value's index among
    them; by hashing (pyarrow), several times faster than sorting 10^7 strings."""
    encoded = _arrow_strings(values).dictionary_encode()
    return encoded.dictionary.to_pylist(), np.asarray(encoded.indices.to_numpy(), dtype=np.int64)


class LogWindowStore:
    """A :class:`~lte_core.engine.WindowReader` whose events are the log itself.

    Every user starts with a head that holds all its events as pending, its clock at or
    before both its first event and its first requested clock, so the first advance lets
    in what belongs to the window and skips what already left. Deleted events are always a
    prefix of a user's rows (they leave oldest first), so a per-user cursor replaces them.
    """

    def __init__(self, events: _UserLog, d: int, decayed: bool, first_end: I64) -> None:
        self._log = events
        self._d = d
        self._decayed = decayed
        n = len(events.user_ids)
        self._index = {u.encode(): i for i, u in enumerate(events.user_ids.tolist())}
        self._heads: list[bytes | None] = [None] * n
        self._started = np.zeros(n, dtype=bool)
        self._live = events.seg[:-1].copy()
        self._first_end = first_end
        self._users: Sequence[bytes] = ()
        self._users_idx = np.empty(0, dtype=np.int64)

    def indices(self, users: Sequence[bytes]) -> I64:
        if users is not self._users:
            self._users = users
            self._users_idx = np.fromiter(
                (self._index[u] for u in users), dtype=np.int64, count=len(users)
            )
        return self._users_idx

    def read_heads(self, users: Sequence[bytes]) -> list[bytes | None]:
        idx = self.indices(users)
        fresh = idx[~self._started[idx]]
        if len(fresh):
            self._start(fresh)
        heads = self._heads
        return [heads[i] for i in idx.tolist()]

    def _start(self, users: I64) -> None:
        ev = self._log
        first = ev.bucket[ev.seg[users]]
        heads = Heads.empty(len(users), self._d, self._decayed)
        heads.has_clock[:] = True
        heads.end[:] = np.minimum(first, self._first_end[users])
        heads.n[:] = ev.seg[users + 1] - ev.seg[users]
        heads.oldest[:] = first
        heads.pending_min[:] = first
        for i, data in zip(
            users.tolist(),
            serialise_heads(heads, np.arange(len(users), dtype=np.int64)),
            strict=True,
        ):
            self._heads[i] = data
        self._started[users] = True

    def read_ranges(self, users: Sequence[bytes], requests: RangeRequests) -> RangeResult:
        ev = self._log
        owner = self.indices(users)[requests.user]
        lo = np.maximum(ev.position(owner, requests.lo), self._live[owner])
        hi = np.maximum(lo, ev.position(owner, requests.hi))
        counts = hi - lo
        total = int(counts.sum())
        starts = np.cumsum(counts) - counts
        rows = np.repeat(lo - starts, counts) + np.arange(total, dtype=np.int64)
        after = hi < ev.seg[owner + 1]
        next_bucket = np.full(len(owner), NO_BUCKET, dtype=np.int64)
        next_bucket[after] = ev.bucket[hi[after]]
        return RangeResult(
            request=np.repeat(np.arange(len(owner), dtype=np.int64), counts),
            bucket=ev.bucket[rows],
            offset=ev.offset[rows],
            item=ev.item[rows],
            weight=ev.weight[rows],
            next_bucket=next_bucket,
        )

    def commit(self, users: Sequence[bytes], result: EngineResult) -> None:
        if len(result.put):
            raise AssertionError("a point-in-time read never adds events")
        idx = self.indices(users)
        for i, head in zip(idx.tolist(), result.heads, strict=True):
            self._heads[i] = head
        self._live[idx] += np.bincount(result.delete.user, minlength=len(idx))


@dataclass(frozen=True, slots=True)
class _Steps:
    """Distinct ``(user, end bucket)`` clocks, sorted by user then time; pair ``p`` reads
    step ``of_pair[p]`` (``-1``: a user the log does not know)."""

    user: I64
    end: I64
    clock: F64
    rank: I64
    of_pair: I64

    @classmethod
    def of(cls, pair_user: I64, pair_end: I64, pair_ts: F64) -> _Steps:
        known = np.flatnonzero(pair_user >= 0)
        order = known[np.lexsort((pair_end[known], pair_user[known]))]
        u, e = pair_user[order], pair_end[order]
        new = np.r_[True, (u[1:] != u[:-1]) | (e[1:] != e[:-1])] if len(order) else np.empty(0)
        first = np.flatnonzero(new)
        of_pair = np.full(len(pair_user), -1, dtype=np.int64)
        of_pair[order] = np.cumsum(new) - 1
        user = u[first]
        user_start = np.flatnonzero(np.r_[True, user[1:] != user[:-1]]) if len(user) else first
        rank = np.arange(len(user), dtype=np.int64) - np.repeat(
            user_start, np.diff(np.r_[user_start, len(user)])
        )
        return cls(user=user, end=e[first], clock=pair_ts[order][first], rank=rank, of_pair=of_pair)


def _engine_half_life(spec: EncoderSpec) -> float | None:
    """The engine keeps decayed sums only for ``recency`` (as the worker's settings say)."""
    return float(spec.half_life) if spec.kind == "recency" else None


def point_in_time(
    log: InteractionLog,
    user_ids: npt.NDArray[np.str_],
    ts: npt.NDArray[np.float64],
    *,
    basis: BasisArtifact,
    window: WindowSpec,
    encoder: EncoderSpec,
    source: str = "log",
) -> Snapshot:
    """The LTE of each ``(user_ids[i], ts[i])`` as the stream computes it at clock ``ts[i]``
    with every event of ``log`` delivered on time (file order breaks ties of equal time).

    Users the log does not know get empty-window rows. Events whose item the basis does
    not know are skipped and counted (``Snapshot.unknown_items``); a log none of whose
    items the basis knows is refused (:class:`SnapshotError`, naming ``source``).
    """
    users_in = np.asarray(user_ids, dtype=np.str_).reshape(-1)
    clocks = np.asarray(ts, dtype=np.float64).reshape(-1)
    if len(users_in) != len(clocks):
        raise ValueError("user_ids and ts must have the same length")
    if not np.isfinite(clocks).all():
        raise SnapshotError(f"pair {int(np.flatnonzero(~np.isfinite(clocks))[0])}: ts not finite")
    events = _UserLog.build(log, basis, window, source)
    if events.unknown_items:
        logger.info(
            "%s: skipped %d events whose item is not in basis %s",
            source,
            events.unknown_items,
            basis.basis_version,
        )
    built = build_encoder(encoder, basis)
    n = len(users_in)
    pair_end = window.end_buckets(clocks)
    pair_user = events.users_of(users_in)
    steps = _Steps.of(pair_user, pair_end, clocks)

    coefficients = np.full((n, basis.k), np.nan, dtype=np.float32)
    vectors = coefficients if basis.is_identity else np.full((n, basis.d), np.nan, np.float32)
    n_events = np.zeros(n, dtype=np.int64)
    weight_sum = np.zeros(n, dtype=np.float64)

    first_end = np.zeros(len(events.user_ids), dtype=np.int64)
    first_end[steps.user[steps.rank == 0]] = steps.end[steps.rank == 0]
    half_life = _engine_half_life(encoder)
    store = LogWindowStore(events, basis.d, half_life is not None, first_end)
    engine = WindowEngine(window, basis.item_vectors, half_life=half_life)
    keys = [u.encode() for u in events.user_ids.tolist()]
    pairs_by_step = np.argsort(steps.of_pair, kind="stable")[np.count_nonzero(pair_user < 0) :]
    step_seg = np.searchsorted(steps.of_pair[pairs_by_step], np.arange(len(steps.user) + 1))

    for chunk in _calls(steps, events, window.n_buckets):
        users = [keys[u] for u in steps.user[chunk].tolist()]
        result = engine.process(store, users, EventColumns.empty(len(users)), steps.clock[chunk])
        store.commit(users, result)
        lte = window_ltes(window, built, result.summary, result.end, np.arange(len(users)))
        counts = step_seg[chunk + 1] - step_seg[chunk]
        within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        pairs = pairs_by_step[np.repeat(step_seg[chunk], counts) + within]
        row = np.repeat(np.arange(len(users)), counts)
        n_events[pairs] = lte.n_events[row]
        weight_sum[pairs] = lte.weight_sum[row]
        if len(lte.filled) == 0:
            continue
        filled_row = np.full(len(users), -1, dtype=np.int64)
        filled_row[lte.filled] = np.arange(len(lte.filled))
        has = filled_row[row] >= 0
        coefficients[pairs[has]] = lte.coefficients[filled_row[row[has]]]
        if vectors is not coefficients:
            vectors[pairs[has]] = lte.vectors[filled_row[row[has]]]

    return Snapshot(
        basis_version=basis.basis_version,
        encoder=built.name,
        window=window,
        user_ids=users_in,
        as_of=clocks,
        window_start=((pair_end - window.n_buckets) * window.bucket).astype(np.float64),
        window_end=(pair_end * window.bucket).astype(np.float64),
        n_events=n_events,
        weight_sum=weight_sum,
        coefficients=coefficients,
        vectors=vectors,
        unknown_items=events.unknown_items,
    )


def _calls(steps: _Steps, events: _UserLog, n_buckets: int) -> list[I64]:
    """Step indices per engine call: rank by rank (so each user's clocks advance in time
    order), each rank cut where the events its steps may move exceed
    :data:`EVENTS_PER_CALL` or its users :data:`USERS_PER_CALL`. A step from end ``p`` to
    ``e`` moves at most the user's events with ``p - W/G <= bucket < e`` (all below ``e``
    on a user's first step)."""
    if len(steps.user) == 0:
        return []
    first = steps.rank == 0
    prev_end = np.r_[0, steps.end[:-1]]
    reach = events.position(steps.user, steps.end)
    since = np.where(
        first,
        events.seg[steps.user],
        events.position(steps.user, prev_end - n_buckets),
    )
    cost = reach - since
    by_rank = np.argsort(steps.rank, kind="stable")
    bounds = np.searchsorted(steps.rank[by_rank], np.arange(int(steps.rank.max()) + 2))
    calls: list[I64] = []
    for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        members = by_rank[lo:hi]
        spent = np.cumsum(cost[members]) - cost[members]
        part = spent // EVENTS_PER_CALL + np.arange(len(members)) // USERS_PER_CALL
        cuts = np.flatnonzero(np.r_[True, part[1:] != part[:-1]])
        calls.extend(np.split(members, cuts[1:]))
    return calls
