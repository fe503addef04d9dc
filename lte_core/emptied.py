"""Windows that a clock move empties, decided without the engine's arithmetic.

A silent user's window empties when the clock moves past every event it holds: nothing is
pending, and the window's old end lies at or before the new start, so each stored event
leaves. Most users a sweep visits are such users, and for them
:meth:`~lte_core.engine.WindowEngine.advance` decodes ``d`` (or ``2·d``) sums per head,
subtracts the leaving terms and then clears the sums to exact zeros, keeps the head's
bookkeeping, and hands back a head to delete. What it returns is known from the head's
64-byte header and the keys of the events that leave: :func:`emptying` picks such users by
their headers alone, :func:`emptied_result` builds the very :class:`EngineResult` the
engine would (head deleted, every found event deleted, no due time left, an update with an
empty window), and the caller commits and emits it through the same code as the engine's.
A user whose found events do not account for its whole window (a store that disagrees
with its head) is not claimed: it goes through the engine, which handles every case.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import numpy.typing as npt

from lte_core.engine import (
    FROM_START,
    NEVER,
    EngineResult,
    EventRecords,
    RangeRequests,
    RangeResult,
    due_times,
)
from lte_core.head import (
    FLAG_DECAYED,
    FLAG_HAS_CLOCK,
    FORMAT_VERSION,
    HEAD_DTYPE,
    HEAD_HEADER_BYTES,
    LEGACY_FORMAT_VERSION,
    NO_BUCKET,
    Heads,
    head_bytes,
    legacy_head_bytes,
)
from lte_core.summary import WindowSummary
from lte_core.window import WindowSpec

I64 = npt.NDArray[np.int64]
_HEADER = operator.itemgetter(slice(HEAD_HEADER_BYTES))


@dataclass(frozen=True, slots=True)
class Emptying:
    """Users (``rows`` of the heads given to :func:`emptying`) whose every stored event
    leaves the window at the clock given, with their heads' bookkeeping (no sums)."""

    rows: I64
    heads: Heads
    #: the window's end and start buckets after the move (the clock's: the same for all)
    end: I64
    start: I64

    def __len__(self) -> int:
        return len(self.rows)

    def requests(self) -> RangeRequests:
        """The engine's read of these users: every event below the new start (user ``j``
        is ``rows[j]``)."""
        k = len(self.rows)
        return RangeRequests(
            user=np.arange(k, dtype=np.int64),
            lo=np.full(k, FROM_START, dtype=np.int64),
            hi=self.start,
        )


def emptying(
    spec: WindowSpec, heads: Sequence[bytes | None], now: float, *, d: int, decayed: bool
) -> Emptying:
    """The users among ``heads`` (stored heads, None = no head) whose window empties at
    ``now`` with nothing entering, judged by the 64-byte headers alone. A head of another
    size, format, dimension or encoder is never picked (the engine raises on it)."""
    present, hdr, sizes = _headers(heads)
    legacy = legacy_head_bytes(d, decayed)
    valid = (
        (hdr["d"] == d)
        & (((hdr["flags"] & FLAG_DECAYED) != 0) == decayed)
        & (
            ((hdr["version"] == FORMAT_VERSION) & (sizes == head_bytes(d, decayed)))
            | ((hdr["version"] == LEGACY_FORMAT_VERSION) & (sizes == legacy))
        )
    )
    old_end = hdr["end"].astype(np.int64)
    new_end = np.maximum(old_end, spec.end_bucket(now))
    new_start = new_end - spec.n_buckets
    count = hdr["count"].astype(np.int64)
    # every stored event is in the window (none pending) and the window's old end is at or
    # before the new start: each one leaves
    picked = np.flatnonzero(
        valid
        & ((hdr["flags"] & FLAG_HAS_CLOCK) != 0)
        & (count > 0)
        & (hdr["n"] == count)
        & (hdr["pending_min"] == NO_BUCKET)
        & (hdr["oldest"] < new_start)
        & (old_end <= new_start)
    )
    fields = Heads.empty(len(picked), 0, decayed=False)
    fields.has_clock[:] = True
    for name in ("count", "n", "partition", "end", "last_offset", "oldest", "pending_min"):
        getattr(fields, name)[:] = hdr[name][picked]
    return Emptying(present[picked], fields, new_end[picked], new_start[picked])


def emptied_result(
    spec: WindowSpec, users: Emptying, found: RangeResult, *, d: int, decayed: bool
) -> tuple[npt.NDArray[np.bool_], EngineResult]:
    """What :meth:`~lte_core.engine.WindowEngine.advance` returns for the users of
    ``users`` whose found events (the answer to :meth:`Emptying.requests`) are their whole
    window, and which users those are (the others, whose store disagrees with the head,
    are left to the engine). Rows of the result are the claimed users, in order."""
    heads = users.heads
    old_end = heads.end
    of = found.request
    # the engine counts out what it read at or after the old start, and empties the window
    # when that is its whole count, all of it inside the old window
    accounted = found.bucket >= old_end[of] - spec.n_buckets
    inside = accounted & (found.bucket < old_end[of])
    claimed = (np.bincount(of[accounted], minlength=len(users)) == heads.count) & (
        np.bincount(of[inside], minlength=len(users)) == heads.count
    )
    renumber = np.cumsum(claimed) - 1
    kept = claimed[of]
    rows = np.flatnonzero(claimed)
    k = len(rows)
    fields = Heads.empty(k, 0, decayed=False)
    fields.has_clock[:] = True
    for name in ("count", "oldest", "pending_min"):
        getattr(fields, name)[:] = getattr(heads, name)[rows]
    result = EngineResult(
        heads=[None] * k,
        put=EventRecords.empty(),
        delete=EventRecords(
            user=renumber[of[kept]],
            bucket=found.bucket[kept],
            offset=found.offset[kept],
            item=found.item[kept],
            weight=found.weight[kept],
        ),
        outcome=np.empty(0, dtype=np.uint8),
        changed=np.ones(k, dtype=bool),
        # an emptied window's sums are exact zeros (the engine clears them)
        summary=WindowSummary(
            sums=np.zeros((k, d)),
            weight_sums=np.zeros(k),
            counts=np.zeros(k, dtype=np.int64),
            decayed_sums=np.zeros((k, d)) if decayed else None,
            decayed_weights=np.zeros(k) if decayed else None,
        ),
        end=users.end[rows],
        next_change=np.full(k, NEVER, dtype=np.int64),
        prev_next_change=due_times(spec, fields),
        last_offset=heads.last_offset[rows].copy(),
        users_delta=-k,
        stored_delta=-int(heads.n[rows].sum()),
    )
    return claimed, result


def _headers(
    heads: Sequence[bytes | None],
) -> tuple[I64, npt.NDArray[np.void], I64]:
    """The rows holding a head (of at least a header's size), their headers and sizes."""
    stored: Sequence[bytes]
    if None in heads:
        present = np.flatnonzero(np.fromiter(map(_is_some, heads), dtype=bool, count=len(heads)))
        stored = cast(list[bytes], list(map(heads.__getitem__, present.tolist())))
    else:  # a sweep's users all have heads
        present = np.arange(len(heads), dtype=np.int64)
        stored = cast(Sequence[bytes], heads)
    sizes = np.fromiter(map(len, stored), dtype=np.int64, count=len(stored))
    if len(sizes) and sizes.min() < HEAD_HEADER_BYTES:
        whole = sizes >= HEAD_HEADER_BYTES
        present, sizes = present[whole], sizes[whole]
        stored = list(itertools.compress(stored, whole.tolist()))
    k = len(stored)
    if k == 0:
        return present, np.zeros(0, dtype=HEAD_DTYPE), sizes
    # only the headers are copied (joining the whole heads cost more than the slices)
    hdr = np.frombuffer(b"".join(map(_HEADER, stored)), dtype=HEAD_DTYPE)
    return present, hdr, sizes


def _is_some(value: object) -> bool:
    return value is not None
