"""The columnar window engine: one call advances and updates many users' windows.

Storage model (what a :class:`WindowReader` serves): per user a *head*
(:mod:`lte_core.head`, O(d) bytes) and one record per stored event keyed by
``(user, bucket, source offset)``. An event is written once when it arrives, read once when
it enters the window from behind the lag, and read and deleted once when it leaves, so
the work per event is O(d) and does not depend on how long the window is. Which reads are
needed follows from the heads alone (``oldest`` / ``pending_min`` against the new window
bounds), so a clock move that changes nothing reads nothing.

The engine does no I/O of its own: it asks the reader for heads and bucket ranges and
returns the mutations (heads, events to put, events to delete) for the caller to commit
atomically. :class:`~lte_core.state.LaggedWindow` is the one-user reference it is tested
against.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
import numpy.typing as npt

from lte_core.compensated import add_weighted_segment_sums
from lte_core.errors import EventTimeRangeError
from lte_core.head import NO_BUCKET, Heads, parse_heads, serialise_heads
from lte_core.summary import WindowSummary
from lte_core.window import MAX_RELATIVE_BUCKETS, WindowSpec

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
U32 = npt.NDArray[np.uint32]

#: Per-event outcome codes of :attr:`EngineResult.outcome`: applied into the window, stored
#: behind the lag (applied, enters later), too old, or already applied (redelivery).
APPLIED, PENDING, LATE, DUPLICATE = 0, 1, 2, 3
#: ``next_change`` value of a window that will never change again.
NEVER = -1
#: Lower bound of a range read that should also collect stray records below the window.
FROM_START = np.iinfo(np.int64).min


@dataclass(frozen=True, slots=True)
class EventColumns:
    """New events grouped by user: user ``i`` owns rows ``seg[i]:seg[i+1]``, in source-offset
    order. Offsets are unique per source partition (Kafka offsets)."""

    seg: I64
    items: U32
    ts: F64
    weights: F32
    offsets: I64

    @classmethod
    def empty(cls, users: int) -> EventColumns:
        return cls(
            seg=np.zeros(users + 1, dtype=np.int64),
            items=np.empty(0, dtype=np.uint32),
            ts=np.empty(0, dtype=np.float64),
            weights=np.empty(0, dtype=np.float32),
            offsets=np.empty(0, dtype=np.int64),
        )


@dataclass(frozen=True, slots=True)
class EventRecords:
    """Stored event records, columnar; ``user`` indexes the batch's user list."""

    user: I64
    bucket: I64
    offset: I64
    item: U32
    weight: F32

    def __len__(self) -> int:
        return len(self.user)

    @classmethod
    def empty(cls) -> EventRecords:
        return cls(
            user=np.empty(0, dtype=np.int64),
            bucket=np.empty(0, dtype=np.int64),
            offset=np.empty(0, dtype=np.int64),
            item=np.empty(0, dtype=np.uint32),
            weight=np.empty(0, dtype=np.float32),
        )


@dataclass(frozen=True, slots=True)
class RangeRequests:
    """Read the events of user ``user[j]`` with ``lo[j] <= bucket < hi[j]``."""

    user: I64
    lo: I64
    hi: I64

    def __len__(self) -> int:
        return len(self.user)


@dataclass(frozen=True, slots=True)
class RangeResult:
    """Events found, with ``request`` = the index of the request each belongs to (events of
    one request in bucket order), and per request the first stored bucket ``>= hi`` of that
    user (:data:`~lte_core.head.NO_BUCKET` if none)."""

    request: I64
    bucket: I64
    offset: I64
    item: U32
    weight: F32
    next_bucket: I64

    @classmethod
    def empty(cls) -> RangeResult:
        return cls(
            request=np.empty(0, dtype=np.int64),
            bucket=np.empty(0, dtype=np.int64),
            offset=np.empty(0, dtype=np.int64),
            item=np.empty(0, dtype=np.uint32),
            weight=np.empty(0, dtype=np.float32),
            next_bucket=np.empty(0, dtype=np.int64),
        )


class WindowReader(Protocol):
    """Read side of a window store (RocksDB in the worker, a dict in tests)."""

    def read_heads(self, users: Sequence[bytes]) -> list[bytes | None]: ...

    def read_ranges(self, users: Sequence[bytes], requests: RangeRequests) -> RangeResult: ...


@dataclass(frozen=True, slots=True)
class EngineResult:
    """Mutations to commit and what changed. ``heads[i] is None`` means delete user ``i``'s
    head: nothing is left in the window or pending."""

    heads: list[bytes | None]
    put: EventRecords
    delete: EventRecords
    outcome: npt.NDArray[np.uint8]
    changed: npt.NDArray[np.bool_]
    summary: WindowSummary
    end: I64
    next_change: I64
    prev_next_change: I64
    #: per user, the highest source offset applied (-1: none): with ``end`` the user's
    #: version (:func:`version_of`), which only grows
    last_offset: I64
    #: change in the number of users with a head, and of stored events
    users_delta: int = 0
    stored_delta: int = 0
    #: the heads after the call as arrays (:meth:`WindowEngine.advance`); a row whose
    #: ``n`` is 0 is a head to delete. ``heads`` holds them encoded, except from
    #: :meth:`WindowEngine.advance`, whose callers keep heads as arrays (``heads == []``)
    state: Heads | None = None


def due_times(spec: WindowSpec, heads: Heads) -> I64:
    """Next clock time each window changes (:data:`NEVER` if it will not): the oldest
    in-window event leaves, or the first pending event enters — whichever comes first."""
    big = np.iinfo(np.int64).max
    leave = np.where(
        heads.has_clock & (heads.count > 0),
        (heads.oldest + spec.n_buckets + 1) * spec.bucket + spec.lag,
        big,
    )
    pending = heads.has_clock & (heads.pending_min != NO_BUCKET)
    enter = np.where(
        pending, (np.where(pending, heads.pending_min, 0) + 1) * spec.bucket + spec.lag, big
    )
    soonest = np.minimum(leave, enter)
    return np.where(soonest == big, NEVER, soonest)


class WindowEngine:
    """Applies batches for one window spec and item catalog.

    With ``half_life`` (seconds) the heads also keep exponentially decayed sums, which is
    what the ``recency`` encoder reads; the decay reference is the window end, and since a
    common factor cancels in the mean, the recency LTE still changes only when events enter
    or leave.
    """

    def __init__(self, spec: WindowSpec, vectors: F32, *, half_life: float | None = None) -> None:
        self.spec = spec
        self.vectors = vectors
        self.d = int(vectors.shape[1])
        self.half_life = half_life
        self._decay_per_bucket = spec.bucket / half_life if half_life else 0.0

    @property
    def decayed(self) -> bool:
        return self.half_life is not None

    def warm_up(self) -> None:
        """Load the compiled summing loops now (from numba's cache, or compile them): about
        1.5 s that would otherwise stall the first batch after the worker reports ready."""
        if len(self.vectors) == 0:
            return
        d = self.vectors.shape[1]
        one = np.zeros(1, dtype=np.int64)
        _add_terms(
            np.zeros((1, d)),
            np.zeros((1, d)),
            np.zeros(1),
            np.zeros(1),
            one,
            np.zeros(1),
            self.vectors,
            np.zeros(1, dtype=np.uint32),
            one,
        )

    def _contributions(
        self, heads: Heads, new_end: I64, *, users: I64, items: U32, signed_w: F64, buckets: I64
    ) -> None:
        """Add Σ w·v (and the decayed variant) into the heads, grouped by user, as
        double-double sums (:mod:`lte_core.compensated`): a term that leaves cancels the
        term that entered exactly, whatever the other weights in the window."""
        if len(users) == 0:
            return
        order = np.argsort(users, kind="stable")
        users, items, signed_w, buckets = (
            users[order],
            items[order],
            signed_w[order],
            buckets[order],
        )
        starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
        owners = users[starts]
        # float32 vectors stay float32 here: the sums multiply them into float64 terms
        # block by block (the same products as converting first, without the copies)
        _add_terms(
            heads.sums,
            heads.sums_lo,
            heads.weight_sum,
            heads.weight_lo,
            owners,
            signed_w,
            self.vectors,
            items,
            starts,
        )
        if heads.decayed_sums is not None and heads.decayed_sums_lo is not None:
            factor = np.exp2((buckets - new_end[users]).astype(np.float64) * self._decay_per_bucket)
            _add_terms(
                heads.decayed_sums,
                heads.decayed_sums_lo,
                heads.decayed_weight,
                heads.decayed_weight_lo,
                owners,
                signed_w * factor,
                self.vectors,
                items,
                starts,
            )

    def process(
        self,
        reader: WindowReader,
        users: Sequence[bytes],
        events: EventColumns,
        now: float | F64,
        *,
        partition: int = -1,
    ) -> EngineResult:
        """Advance the windows of ``users`` to ``now`` and apply ``events``.

        Per user this is :meth:`LaggedWindow.apply`. A head left with nothing stored is
        deleted rather than kept for its offset and clock, so callers never move ``now``
        backwards (the worker keeps a per-partition clock high-water mark); under that rule
        a redelivered event of a deleted user is older than the window and counts as
        ``late`` instead of ``duplicate``, with the same effect.

        ``now`` may also be one clock per user: windows are independent, so an offline
        point-in-time read moves many users, each to its own next clock, in one call.
        """
        heads = parse_heads(reader.read_heads(users), self.d, self.decayed)
        result = self.advance(
            heads,
            lambda requests: reader.read_ranges(users, requests),
            events,
            now,
            partition=partition,
        )
        kept = np.flatnonzero(heads.n > 0)
        out: list[bytes | None] = [None] * len(users)
        for i, data in zip(kept.tolist(), serialise_heads(heads, kept), strict=True):
            out[i] = data
        return replace(result, heads=out)

    def advance(  # noqa: PLR0915 - one vectorised pass, clearer kept together
        self,
        heads: Heads,
        read_ranges: Callable[[RangeRequests], RangeResult],
        events: EventColumns,
        now: float | F64,
        *,
        partition: int = -1,
    ) -> EngineResult:
        """:meth:`process` on heads held as arrays: ``heads`` (one row per user, in place)
        become the heads after the call, and ``read_ranges`` serves the range reads of
        these users. This is the whole of the engine's arithmetic; :meth:`process` only
        decodes the stored heads before it and encodes them after it, so a reader that
        keeps heads as arrays (the offline point-in-time reads) skips the byte round trip
        and computes the same numbers."""
        spec, g, nb = self.spec, self.spec.bucket, self.spec.n_buckets
        m = len(heads)
        if len(events.seg) != m + 1:
            raise ValueError("events.seg must have one entry per user plus one")
        prev_next = due_times(spec, heads)
        existed = heads.has_clock.copy()
        stored_before = int(heads.n.sum())
        old_end = heads.end.copy()
        old_start = old_end - nb
        end_now = spec.end_buckets(now) if isinstance(now, np.ndarray) else spec.end_bucket(now)
        new_end = np.where(heads.has_clock, np.maximum(old_end, end_now), end_now)
        new_start = new_end - nb

        # -- reads: what leaves (and stray records below the window), what enters ----------
        leave_rows = np.flatnonzero(heads.has_clock & (heads.n > 0) & (heads.oldest < new_start))
        enter_rows = np.flatnonzero(heads.has_clock & (heads.n > 0) & (heads.pending_min < new_end))
        requests = RangeRequests(
            user=np.concatenate([leave_rows, enter_rows]),
            lo=np.concatenate(
                [
                    np.full(len(leave_rows), FROM_START, dtype=np.int64),
                    np.maximum(old_end[enter_rows], new_start[enter_rows]),
                ]
            ),
            hi=np.concatenate([new_start[leave_rows], new_end[enter_rows]]),
        )
        found = read_ranges(requests) if len(requests) else RangeResult.empty()
        is_leave = found.request < len(leave_rows)
        ru = requests.user[found.request]
        # leave range: in-window events leave, pending ones are skipped by a jump, anything
        # below the old window is a stray record (an interrupted restore) and is only deleted
        accounted = is_leave & (found.bucket >= old_start[ru])
        was_in = accounted & (found.bucket < old_end[ru])
        leaving = was_in
        entering = ~is_leave

        if self.decayed:
            assert heads.decayed_sums is not None
            moved_by = np.where(heads.has_clock, new_end - old_end, 0).astype(np.float64)
            shift = np.exp2(-moved_by * self._decay_per_bucket)
            assert heads.decayed_sums_lo is not None
            heads.decayed_sums *= shift[:, None]
            heads.decayed_sums_lo *= shift[:, None]
            heads.decayed_weight *= shift
            heads.decayed_weight_lo *= shift

        # -- new events -------------------------------------------------------------------
        per_user = np.diff(events.seg)
        nu = np.repeat(np.arange(m, dtype=np.int64), per_user)
        fresh = events.offsets > heads.last_offset[nu]
        nonempty = per_user > 0
        if nonempty.any():
            top = np.maximum.reduceat(events.offsets, events.seg[:-1][nonempty])
            heads.last_offset[nonempty] = np.maximum(heads.last_offset[nonempty], top)
            if partition >= 0:
                heads.partition[nonempty] = partition
        late = fresh & (events.ts < new_start[nu].astype(np.float64) * g)
        accepted = fresh & ~late
        outcome = np.full(len(events.ts), APPLIED, dtype=np.uint8)
        outcome[~fresh] = DUPLICATE
        outcome[late] = LATE
        au = nu[accepted]
        ats = events.ts[accepted]
        if (ats > (new_end[au] + MAX_RELATIVE_BUCKETS).astype(np.float64) * g).any():
            raise EventTimeRangeError(
                "event ts is more than 2^31 buckets after the window clock; reject such events "
                "before they reach the state (the worker's --max-future-skew does)"
            )
        new = EventRecords(
            user=au,
            bucket=spec.bucket_of_array(ats),
            offset=events.offsets[accepted],
            item=events.items[accepted].astype(np.uint32, copy=False),
            weight=events.weights[accepted].astype(np.float32, copy=False),
        )
        new_in = new.bucket < new_end[au]
        outcome[np.flatnonzero(accepted)[~new_in]] = PENDING

        # -- sums and counts -----------------------------------------------------------------
        heads.count += (
            np.bincount(ru[entering], minlength=m)
            - np.bincount(ru[leaving], minlength=m)
            + np.bincount(au[new_in], minlength=m)
        )
        term_user = np.concatenate([ru[leaving], ru[entering], au[new_in]])
        # a window left empty is cleared to exact zeros below, so its terms are not summed
        # (a sweep of silent users empties most of the windows it visits)
        live = heads.count[term_user] > 0
        self._contributions(
            heads,
            new_end,
            users=term_user[live],
            items=np.concatenate([found.item[leaving], found.item[entering], new.item[new_in]])[
                live
            ],
            signed_w=np.concatenate(
                [
                    -found.weight[leaving].astype(np.float64),
                    found.weight[entering].astype(np.float64),
                    new.weight[new_in].astype(np.float64),
                ]
            )[live],
            buckets=np.concatenate(
                [found.bucket[leaving], found.bucket[entering], new.bucket[new_in]]
            )[live],
        )
        moved = (
            np.bincount(ru[leaving | entering], minlength=m) + np.bincount(au[new_in], minlength=m)
        ) > 0
        heads.n += np.bincount(au, minlength=m) - np.bincount(ru[accounted], minlength=m)
        heads.clear(heads.count == 0)

        # -- oldest stored bucket and first pending bucket -----------------------------------
        heads.oldest[leave_rows] = found.next_bucket[: len(leave_rows)]
        heads.pending_min[enter_rows] = found.next_bucket[len(leave_rows) :]
        if len(au):
            new_min = np.full(m, NO_BUCKET, dtype=np.int64)
            np.minimum.at(new_min, au, new.bucket)
            heads.oldest = np.minimum(heads.oldest, new_min)
            pend = ~new_in
            new_pend = np.full(m, NO_BUCKET, dtype=np.int64)
            np.minimum.at(new_pend, au[pend], new.bucket[pend])
            heads.pending_min = np.minimum(heads.pending_min, new_pend)
        heads.end = new_end
        heads.has_clock[:] = True
        gone = heads.n == 0
        heads.oldest[gone] = NO_BUCKET
        heads.pending_min[gone] = NO_BUCKET

        return EngineResult(
            heads=[],
            put=new,
            delete=EventRecords(
                user=ru[is_leave],
                bucket=found.bucket[is_leave],
                offset=found.offset[is_leave],
                item=found.item[is_leave],
                weight=found.weight[is_leave],
            ),
            outcome=outcome,
            changed=moved,
            summary=_summary(heads),
            end=new_end,
            last_offset=heads.last_offset,
            next_change=due_times(spec, heads),
            prev_next_change=prev_next,
            users_delta=int(np.count_nonzero(~gone & ~existed) - np.count_nonzero(gone & existed)),
            stored_delta=int(heads.n.sum()) - stored_before,
            state=heads,
        )


def _add_terms(  # noqa: PLR0917 - the four halves of two double-double sums
    sums: F64,
    sums_lo: F64,
    weight: F64,
    weight_lo: F64,
    owners: I64,
    signed_w: F64,
    vectors: F32,
    items: U32,
    starts: I64,
) -> None:
    """``(sums, weight)[owners] += Σ signed_w·(vectors[items], 1)`` per segment, in
    double-double."""
    add_weighted_segment_sums(
        sums, sums_lo, weight, weight_lo, owners, signed_w, vectors, items.astype(np.int64), starts
    )


def _summary(heads: Heads) -> WindowSummary:
    """What encoders read: each double-double sum rounded once to float64."""
    decayed = heads.decayed_sums is not None and heads.decayed_sums_lo is not None
    return WindowSummary(
        sums=heads.sums + heads.sums_lo,
        weight_sums=heads.weight_sum + heads.weight_lo,
        counts=heads.count,
        decayed_sums=heads.decayed_sums + heads.decayed_sums_lo  # type: ignore[operator]
        if decayed
        else None,
        decayed_weights=heads.decayed_weight + heads.decayed_weight_lo if decayed else None,
    )
