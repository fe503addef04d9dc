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
events enter and leave exactly as the worker's sweeper does, and nothing is copied.

One pass. Pairs are sorted by time per user and deduplicated by window end bucket (pairs in
the same end bucket share a window); the k-th clock of every user is advanced in one engine
call (windows of different users are independent, and the engine takes one clock per user),
split into calls that move a bounded number of events; the calls of one rank move disjoint
users and run on two threads. Each event is read once when it enters and once when it
leaves, whatever the number of pairs. The threads run exactly the calls one thread would,
so they change no bit of the answers.

The users' state is one head each (O(d)), held as arrays and handed to
:meth:`~lte_core.engine.WindowEngine.advance` -- the engine's whole arithmetic, which the
worker's :meth:`~lte_core.engine.WindowEngine.process` runs between decoding and encoding
its stored heads -- so no head is ever turned into bytes here. Ids are factorised by
hashing (packed into integers when short), not by sorting strings.

By blocks of users, through temporary files (a Grace-hash-join style spill). Users are
independent, so the work splits by user:

1. *Partition pass.* The caller's log is read :data:`CHUNK_EVENTS` events at a time: user
   ids get global codes from a table grown chunk by chunk (:class:`_IdTable`), items their
   basis rows (unknown items skipped and counted), times their buckets, and each event is
   appended as a 16-byte record (user within its block, item row, bucket, weight) to the
   spill file of block ``code % B``.
2. *Per block*, in turn: its spill is read and sorted into a :class:`_UserLog` (the per-user
   order the engine's range reads need), heads are made for that block's users only, its
   pairs are answered by the one pass above, and the answers are written, in pair order, to
   the block's answer file.
3. *Read back in request order* (:meth:`SnapshotStream.chunks`): :data:`CHUNK_ROWS` rows at
   a time, each gathered from the B answer files (a block's rows of one chunk are one
   contiguous run of its file, read with ``np.fromfile(offset=, count=)``; no memory map,
   whose touched pages would count as resident).

B is chosen so that one block's spilled events and one block's answers each average at
most :data:`BLOCK_BYTES` (192 MB; :func:`_blocks_for`), up to :data:`MAX_BLOCKS` blocks (past
16 GB of spilled events, blocks grow instead); users are dealt to blocks by code, so a
block's share is even unless a few users hold much of the log.

Memory, beyond the inputs (the caller's log, and the pairs with O(pairs) integers for their
user codes, end buckets, positions -- ~24 B per pair): the partition pass holds one chunk
(~100 B per chunk event of scratch) and the id table (O(users)); a block holds its events
(its spill read back and its index: ~32 B per event of the block, <= ~2·BLOCK_BYTES on
average), its users' heads (O(users·d / B)) and its answers (<= ~BLOCK_BYTES); reading back
holds one output chunk (O(CHUNK_ROWS·d)). No array of the log's length exists, and the
whole output exists only if the caller collects it (:func:`point_in_time` does, for tests
and small inputs; ``lte snapshot`` writes each chunk as it comes). Disk: 16 B per known
event plus one answer record per known pair (8 + 8 + 4·K (+ 4·d) bytes), in a
:class:`tempfile.TemporaryDirectory` (``TMPDIR``) removed when the run ends, also on error.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from lte_core.basis import BasisArtifact
from lte_core.encoders import Encoder, EncoderSpec, build_encoder
from lte_core.engine import (
    EngineResult,
    EventColumns,
    RangeRequests,
    RangeResult,
    WindowEngine,
)
from lte_core.errors import LTEError
from lte_core.head import NO_BUCKET, Heads
from lte_core.window import WindowSpec
from lte_core.window_lte import window_ltes
from offline.datasets import InteractionLog

logger = logging.getLogger(__name__)

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
Codes = npt.NDArray[np.int32]

#: Events one engine call may move (enter + leave), bounding its float64 scratch memory.
EVENTS_PER_CALL = 1 << 15
#: Users one engine call may advance, bounding the heads it decodes at once.
USERS_PER_CALL = 1 << 15
#: Events of the caller's log read per chunk of the partition pass (the pass's only
#: per-event memory: ~100 bytes per event of scratch, so ~100 MB).
CHUNK_EVENTS = 1 << 20
#: Average bytes of one block's spilled events, and of one block's answers: the number
#: of user blocks is chosen so that neither exceeds it (:func:`_blocks_for`).
BLOCK_BYTES = 192 << 20
#: At most this many blocks (one open spill file each during the partition pass).
MAX_BLOCKS = 256
#: Read and sort the next block on a thread while one block is answered (two blocks'
#: events in memory at once). Off: on 2 cores it competed with the engine's two threads
#: (bench.snapshot, same load: 13.5 s with it, 10.9 s without, +320 MB against +213 MB).
PREFETCH = False
#: Output rows per chunk read back in request order.
CHUNK_ROWS = 1 << 16
#: A spilled event: its user within the block, basis row, bucket - low, weight (16 B).
_SPILL = np.dtype([("user", "<u4"), ("item", "<u4"), ("bucket", "<u4"), ("weight", "<f4")])
#: Threads running the engine calls of one rank side by side. Two: numpy releases the
#: GIL in the engine's heavy loops but not in its per-user head coding, so more threads
#: mostly wait (measured on 2 cores: two threads take 3/4 of one thread's wall time).
WORKERS = min(2, os.cpu_count() or 1)


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


def overlapping(window_end: F64, sequence_start: F64) -> npt.NDArray[np.bool_]:
    """Rows whose LTE window ends after the example's short-term sequence begins
    (``window_end``: :attr:`Snapshot.window_end`, or :func:`window_ends` of the pairs).

    Such an LTE covers part of the horizon the sequence model is trained to predict from
    (and, causally, its targets): training on it leaks what serving will not have. The
    rule is ``window_end <= sequence_start`` (DESIGN 3.5b)."""
    start = np.asarray(sequence_start, dtype=np.float64)
    if start.shape != window_end.shape:
        raise ValueError("sequence_start must have one entry per snapshot row")
    return np.asarray(window_end > start, dtype=np.bool_)


@dataclass(frozen=True, slots=True)
class _UserLog:
    """The known events of one block of users, sorted by ``(user, bucket, file order)``;
    user ``u`` (its index within the block) owns rows ``seg[u]:seg[u+1]``.
    ``key = u·span + bucket - low`` sorts the same way, makes every range read one
    ``searchsorted`` and gives back the bucket, so an event costs 16 bytes (key, item
    row, weight): its source offset is not kept, as nothing downstream of a point-in-time
    read needs it (a row of this index is just as unique)."""

    n_users: int
    seg: I64
    key: I64
    item: npt.NDArray[np.uint32]
    weight: F32
    span: int
    low: int

    @classmethod
    def of_spill(cls, spill: npt.NDArray[Any], n_users: int, span: int, low: int) -> _UserLog:
        """The index of one block's spilled events (:data:`_SPILL` records in file order)."""
        n = len(spill)
        key = spill["user"].astype(np.int64)
        key *= span
        key += spill["bucket"]
        if span * max(n_users, 1) * max(n, 1) < 2**63:
            # one unstable sort of (key, file row) pairs: the same order as a stable
            # argsort of key, several times faster (numpy sorts int64 with SIMD)
            key *= n
            key += np.arange(n, dtype=np.int64)
            key.sort()
            order = key % n if n else key
            key //= max(n, 1)
        else:
            order = np.argsort(key, kind="stable")
            key = key[order]
        seg = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(spill["user"], minlength=n_users), out=seg[1:])
        return cls(
            n_users=n_users,
            seg=seg,
            key=key,
            item=spill["item"][order],
            weight=spill["weight"][order],
            span=span,
            low=low,
        )

    def bucket(self, rows: I64, owner: I64) -> I64:
        """Buckets of index rows ``rows``, which belong to users ``owner``."""
        return self.key[rows] - owner * self.span + self.low

    def position(self, users: I64, buckets: I64) -> I64:
        """Per ``(user, bucket)``: the first row of that user at or after that bucket."""
        local = np.clip(buckets, self.low, self.low + self.span - 1) - self.low
        return np.searchsorted(self.key, users * self.span + local, side="left").astype(np.int64)


@dataclass(frozen=True, slots=True)
class _Ids:
    """Distinct string ids, in order of first appearance: the table that maps ids to
    indices (:meth:`factorise` gives each input string's index, :meth:`lookup` finds
    more strings).

    Ids of at most 8 ASCII characters (numbers, short codes -- what logs mostly hold) are
    packed into one uint64 each, which is exact, and factorised by hashing those
    integers; other ids are hashed as strings (pyarrow). Both are several times faster
    than sorting 10^7 strings, and the packed path also skips converting numpy's UTF-32
    strings to arrow's UTF-8."""

    values: npt.NDArray[np.str_]
    packed: npt.NDArray[np.uint64] | None

    @classmethod
    def factorise(cls, strings: npt.NDArray[np.str_]) -> tuple[_Ids, Codes]:
        import pyarrow as pa  # noqa: PLC0415

        strings = np.ascontiguousarray(np.asarray(strings, dtype=np.str_))
        packed = _packed(strings)
        if packed is None:
            encoded = _arrow_strings(strings).dictionary_encode()
            values = np.asarray(encoded.dictionary.to_pylist(), dtype=np.str_)
            distinct = None
        else:
            encoded = pa.array(packed, type=pa.uint64()).dictionary_encode()
            distinct = np.ascontiguousarray(encoded.dictionary.to_numpy(zero_copy_only=False))
            values = distinct.view("S8").astype(np.str_)
        codes = np.asarray(encoded.indices.to_numpy(), dtype=np.int32)
        return cls(values=values, packed=distinct), codes

    def lookup(self, strings: npt.NDArray[np.str_]) -> I64:
        """Each string's index among ``values``, -1 for strings not among them."""
        import pyarrow as pa  # noqa: PLC0415
        import pyarrow.compute as pc  # noqa: PLC0415

        strings = np.ascontiguousarray(np.asarray(strings, dtype=np.str_))
        packed = _packed(strings) if self.packed is not None else None
        if packed is not None and self.packed is not None:
            found = pc.index_in(pa.array(packed), value_set=pa.array(self.packed))
        else:
            found = pc.index_in(_arrow_strings(strings), value_set=_arrow_strings(self.values))
        return np.asarray(found.fill_null(-1).to_numpy(), dtype=np.int64)


def _packed(strings: npt.NDArray[np.str_]) -> npt.NDArray[np.uint64] | None:
    """Each string's characters as the bytes of one little-endian uint64 (exact: distinct
    strings give distinct integers, and ``view("S8")`` gives the strings back), or None
    if some string is longer than 8 characters or not ASCII."""
    n = len(strings)
    width = strings.dtype.itemsize // 4
    if n == 0 or width == 0:
        return None if n else np.empty(0, dtype=np.uint64)
    chars = strings.view(np.uint32).reshape(n, width)
    top = chars.max(axis=0)
    used = int(np.flatnonzero(top)[-1]) + 1 if top.any() else 0
    if used > 8 or (used and int(top.max()) >= 0x80):
        return None
    out = np.zeros((n, 8), dtype=np.uint8)
    out[:, :used] = chars[:, :used]
    return out.view("<u8").reshape(n)


def _arrow_strings(values: npt.NDArray[np.str_]) -> Any:
    """``values`` as one arrow string array. Arrow reads numpy's strings up to their first
    NUL, so ids holding one inside go through Python strings instead."""
    import pyarrow as pa  # noqa: PLC0415

    values = np.ascontiguousarray(values)
    chars = values.view(np.uint32).reshape(len(values), values.dtype.itemsize // 4)
    if chars.shape[1] > 1 and ((chars[:, :-1] == 0) & (chars[:, 1:] != 0)).any():
        return pa.array(values.tolist(), type=pa.large_string())
    strings = pa.array(values, type=pa.large_string())
    if isinstance(strings, pa.ChunkedArray):  # big inputs may convert in chunks
        strings = strings.combine_chunks()
    return strings


class _IdTable:
    """Distinct ids in order of first appearance, grown chunk by chunk: :meth:`codes` gives
    a chunk's ids their indices, adding the ids not seen before. Each chunk is factorised
    by hashing (packed integers while every id so far packs, as :class:`_Ids`; arrow
    strings from the first chunk that does not) and its distinct ids are looked up in the
    table so far, so memory is the table plus one chunk."""

    def __init__(self) -> None:
        self._parts: list[Any] = []
        self._packed = True
        self._size = 0

    def codes(self, strings: npt.NDArray[np.str_]) -> I64:
        import pyarrow as pa  # noqa: PLC0415
        import pyarrow.compute as pc  # noqa: PLC0415

        strings = np.ascontiguousarray(np.asarray(strings, dtype=np.str_))
        packed = _packed(strings) if self._packed else None
        if packed is None and self._packed:
            values = self.ids().values
            self._packed = False
            self._parts = [_arrow_strings(values)] if len(values) else []
        if packed is not None:
            encoded = pa.array(packed, type=pa.uint64()).dictionary_encode()
        else:
            encoded = _arrow_strings(strings).dictionary_encode()
        distinct = encoded.dictionary
        if self._parts:
            table = pa.concat_arrays(self._parts)
            self._parts = [table]
            found = np.asarray(
                pc.index_in(distinct, value_set=table).fill_null(-1).to_numpy(), np.int64
            )
        else:
            found = np.full(len(distinct), -1, dtype=np.int64)
        new = found < 0
        n_new = int(np.count_nonzero(new))
        found[new] = np.arange(self._size, self._size + n_new)
        if n_new:
            self._parts.append(distinct.filter(pa.array(new)))
        self._size += n_new
        return found[np.asarray(encoded.indices.to_numpy(), dtype=np.int64)]

    def ids(self) -> _Ids:
        """The table as :class:`_Ids` (for looking up the pairs' users)."""
        import pyarrow as pa  # noqa: PLC0415

        if self._packed:
            parts = [np.asarray(p.to_numpy(zero_copy_only=False)) for p in self._parts]
            packed = np.ascontiguousarray(
                np.concatenate(parts) if parts else np.empty(0, np.uint64), dtype=np.uint64
            )
            return _Ids(values=packed.view("S8").astype(np.str_), packed=packed)
        table = pa.concat_arrays(self._parts) if self._parts else pa.array([], pa.large_string())
        return _Ids(values=np.asarray(table.to_pylist(), dtype=np.str_), packed=None)

    def __len__(self) -> int:
        return self._size


class LogWindowStore:
    """The range reads of :meth:`~lte_core.engine.WindowEngine.advance` served from the log
    itself, and every user's head, held as arrays (one :class:`~lte_core.head.Heads` row
    per user of the log: O(users·d), and no per-user bytes to decode and encode).

    Every user starts with a head that holds all its events as pending, its clock at or
    before both its first event and its first requested clock, so the first advance lets
    in what belongs to the window and skips what already left. Deleted events are always a
    prefix of a user's rows (they leave oldest first), so a per-user cursor replaces them.

    Calls name users by their indices in the log. Calls on disjoint users may run in
    different threads: each touches only its users' rows.
    """

    def __init__(self, events: _UserLog, d: int, decayed: bool, first_end: I64) -> None:
        self._log = events
        users = np.arange(events.n_users, dtype=np.int64)
        first = events.bucket(events.seg[:-1], users)
        heads = Heads.empty(len(users), d, decayed)
        heads.has_clock[:] = True
        heads.end[:] = np.minimum(first, first_end)
        heads.n[:] = np.diff(events.seg)
        heads.oldest[:] = first
        heads.pending_min[:] = first
        self._heads = heads
        self._live = events.seg[:-1].copy()

    def heads(self, users: I64) -> Heads:
        """The heads of ``users`` (a copy, for one engine call)."""
        return self._heads.take(users)

    def read_ranges(self, users: I64, requests: RangeRequests) -> RangeResult:
        ev = self._log
        owner = users[requests.user]
        lo = np.maximum(ev.position(owner, requests.lo), self._live[owner])
        hi = np.maximum(lo, ev.position(owner, requests.hi))
        counts = hi - lo
        total = int(counts.sum())
        starts = np.cumsum(counts) - counts
        rows = np.repeat(lo - starts, counts) + np.arange(total, dtype=np.int64)
        request = np.repeat(np.arange(len(owner), dtype=np.int64), counts)
        after = hi < ev.seg[owner + 1]
        next_bucket = np.full(len(owner), NO_BUCKET, dtype=np.int64)
        next_bucket[after] = ev.bucket(hi[after], owner[after])
        return RangeResult(
            request=request,
            bucket=ev.bucket(rows, owner[request]),
            offset=rows,
            item=ev.item[rows],
            weight=ev.weight[rows],
            next_bucket=next_bucket,
        )

    def commit(self, users: I64, result: EngineResult) -> None:
        if len(result.put) or result.state is None:
            raise AssertionError("a point-in-time read never adds events")
        self._heads.assign(users, result.state)
        self._live[users] += np.bincount(result.delete.user, minlength=len(users))


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


@dataclass(frozen=True, slots=True)
class _Partition:
    """The log split into per-block spill files of :data:`_SPILL` records (file order
    kept within a block); user ``u`` of ``users`` is user ``u // blocks`` of block
    ``u % blocks``. Buckets are stored as ``bucket - low`` (``0 < . < span``)."""

    users: _Ids
    blocks: int
    paths: list[Path]
    span: int
    low: int
    unknown_items: int

    def block_users(self, block: int) -> int:
        return max(0, -(-(len(self.users.values) - block) // self.blocks))


def _partition(
    log: InteractionLog,
    basis: BasisArtifact,
    spec: WindowSpec,
    *,
    source: str,
    blocks: int,
    directory: Path,
    chunk_events: int,
) -> _Partition:
    """One pass over the caller's log, ``chunk_events`` events at a time: ids to codes,
    items to basis rows (unknown items skipped and counted), times to buckets, each event
    appended to its user's block file. No array of the log's length is made."""
    n = len(log)
    if n == 0:
        raise SnapshotError(f"{source}: the log holds no events")
    ts = log.ts  # converted chunk by chunk, should it not be float64
    # bucket_of is monotonic: the extreme buckets are those of the extreme times
    low = spec.bucket_of(float(np.min(ts))) - 1
    span = spec.bucket_of(float(np.max(ts))) - low + 2
    if span >= 2**32:
        raise SnapshotError(
            f"{source}: {span:,} buckets of {spec.bucket}s is too fine a bucket for this "
            "log; use a coarser --bucket"
        )
    table = _IdTable()
    paths = [directory / f"log-{b}.bin" for b in range(blocks)]
    unknown = 0
    with ExitStack() as files:
        outs = [files.enter_context(path.open("wb")) for path in paths]
        for lo in range(0, n, chunk_events):
            part = slice(lo, lo + chunk_events)
            items, item_code = _Ids.factorise(log.item_ids[part])
            rows = basis.rows_of(items.values.tolist()).astype(np.int64)[item_code]
            known = rows >= 0
            n_known = int(np.count_nonzero(known))
            unknown += len(rows) - n_known
            if n_known == 0:
                continue
            code = table.codes(log.user_ids[part][known])
            spill = np.empty(n_known, dtype=_SPILL)
            spill["user"] = code // blocks
            spill["item"] = rows[known]
            spill["bucket"] = spec.bucket_of_array(np.asarray(ts[part], np.float64)[known]) - low
            spill["weight"] = np.asarray(log.weights[part])[known]
            block = (code % blocks).astype(np.uint16)
            order = np.argsort(block, kind="stable")  # radix sort: O(chunk)
            cuts = np.searchsorted(block[order], np.arange(blocks + 1)).tolist()
            spill = spill[order]
            for b, out in enumerate(outs):
                if cuts[b + 1] > cuts[b]:
                    spill[cuts[b] : cuts[b + 1]].tofile(out)
    if unknown == n:
        raise SnapshotError(
            f"{source}: none of its {n:,} events has an item of basis "
            f"{basis.basis_version}; is it the basis the log's items were embedded for?"
        )
    return _Partition(
        users=table.ids(), blocks=blocks, paths=paths, span=span, low=low, unknown_items=unknown
    )


def _blocks_for(n_events: int, n_pairs: int, row_bytes: int) -> int:
    """Blocks so that one block's spilled events, and one block's answers, average at
    most :data:`BLOCK_BYTES` (users are dealt to blocks evenly by code)."""
    need = max(n_events * _SPILL.itemsize, n_pairs * row_bytes)
    return int(min(MAX_BLOCKS, max(1, -(-need // BLOCK_BYTES))))


def _answer_dtype(basis: BasisArtifact) -> np.dtype[Any]:
    fields: list[Any] = [
        ("n_events", "<i8"),
        ("weight_sum", "<f8"),
        ("coefficients", "<f4", (basis.k,)),
    ]
    if not basis.is_identity:
        fields.append(("vectors", "<f4", (basis.d,)))
    return np.dtype(fields)


def _answer_block(
    events: _UserLog,
    pair_user: I64,
    pair_end: I64,
    clocks: F64,
    *,
    basis: BasisArtifact,
    window: WindowSpec,
    encoder: EncoderSpec,
    built: Encoder,
) -> npt.NDArray[Any]:
    """The answers (:func:`_answer_dtype` records) of one block's pairs, in the given
    order; ``pair_user`` are users of the block (all known)."""
    n = len(pair_user)
    answers = np.zeros(n, dtype=_answer_dtype(basis))
    answers["coefficients"] = np.nan
    if not basis.is_identity:
        answers["vectors"] = np.nan
    steps = _Steps.of(pair_user, pair_end, clocks)
    first_end = np.zeros(events.n_users, dtype=np.int64)
    first_end[steps.user[steps.rank == 0]] = steps.end[steps.rank == 0]
    half_life = _engine_half_life(encoder)
    store = LogWindowStore(events, basis.d, half_life is not None, first_end)
    engine = WindowEngine(window, basis.item_vectors, half_life=half_life)
    pairs_by_step = np.argsort(steps.of_pair, kind="stable")
    step_seg = np.searchsorted(steps.of_pair[pairs_by_step], np.arange(len(steps.user) + 1))

    def answer(chunk: I64) -> None:
        users = steps.user[chunk]
        result = engine.advance(
            store.heads(users),
            partial(store.read_ranges, users),
            EventColumns.empty(len(users)),
            steps.clock[chunk],
        )
        store.commit(users, result)
        lte = window_ltes(window, built, result.summary, result.end, np.arange(len(users)))
        counts = step_seg[chunk + 1] - step_seg[chunk]
        within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        pairs = pairs_by_step[np.repeat(step_seg[chunk], counts) + within]
        row = np.repeat(np.arange(len(users)), counts)
        answers["n_events"][pairs] = lte.n_events[row]
        answers["weight_sum"][pairs] = lte.weight_sum[row]
        if len(lte.filled) == 0:
            return
        filled_row = np.full(len(users), -1, dtype=np.int64)
        filled_row[lte.filled] = np.arange(len(lte.filled))
        has = filled_row[row] >= 0
        answers["coefficients"][pairs[has]] = lte.coefficients[filled_row[row[has]]]
        if not basis.is_identity:
            answers["vectors"][pairs[has]] = lte.vectors[filled_row[row[has]]]

    ranks = _calls(steps, events, window.n_buckets)
    if WORKERS <= 1:
        for calls in ranks:
            for chunk in calls:
                answer(chunk)
    else:
        # the calls of one rank move disjoint users: they may run side by side (numpy
        # releases the GIL in the engine's heavy loops); the next rank waits for them
        with ThreadPoolExecutor(WORKERS, thread_name_prefix="snapshot") as pool:
            for calls in ranks:
                for done in [pool.submit(answer, chunk) for chunk in calls]:
                    done.result()
    return answers


def _answered_blocks(
    parts: _Partition,
    code: I64,
    pair_end: I64,
    clocks: F64,
    *,
    directory: Path,
    basis: BasisArtifact,
    window: WindowSpec,
    encoder: EncoderSpec,
    built: Encoder,
) -> tuple[list[I64], list[Path]]:
    """Each block's pairs answered from its spilled log, one block in memory at a time;
    per block the positions of its pairs (ascending) and the file of their answers (in
    that order). ``code`` is each pair's user in ``parts.users`` (-1: unknown)."""
    n_blocks = parts.blocks
    known = np.flatnonzero(code >= 0)
    pair_block = (code[known] % n_blocks).astype(np.uint16)
    order = np.argsort(pair_block, kind="stable")  # radix sort; positions stay ascending
    by_block = known[order]
    cuts = np.searchsorted(pair_block[order], np.arange(n_blocks + 1))
    positions = [by_block[cuts[b] : cuts[b + 1]] for b in range(n_blocks)]
    answer_paths = [directory / f"answers-{b}.bin" for b in range(n_blocks)]

    def load(b: int) -> _UserLog:
        spill = np.fromfile(parts.paths[b], dtype=_SPILL)
        parts.paths[b].unlink()
        return _UserLog.of_spill(spill, parts.block_users(b), parts.span, parts.low)

    with ThreadPoolExecutor(1, thread_name_prefix="snapshot-load") as loader:
        # the next block is read and sorted while this one is answered (numpy's sort
        # releases the GIL); PREFETCH off loads each block when its turn comes
        upcoming = loader.submit(load, 0) if PREFETCH else None
        for b in range(n_blocks):
            events = upcoming.result() if upcoming is not None else load(b)
            upcoming = loader.submit(load, b + 1) if PREFETCH and b + 1 < n_blocks else None
            mine = positions[b]
            _answer_block(
                events,
                code[mine] // n_blocks,
                pair_end[mine],
                clocks[mine],
                basis=basis,
                window=window,
                encoder=encoder,
                built=built,
            ).tofile(answer_paths[b])
            del events
    return positions, answer_paths


@dataclass(frozen=True, slots=True)
class SnapshotStream:
    """The rows of a snapshot, computed and spilled, to be read in request order as
    :class:`Snapshot` chunks of at most ``chunk_rows`` rows (:meth:`chunks`). Valid only
    inside the ``with`` of :func:`streamed` (the spill files go with it)."""

    basis_version: str
    encoder: str
    window: WindowSpec
    unknown_items: int
    blocks: int
    rows: int
    _read: Callable[[], Iterator[Snapshot]]

    def chunks(self) -> Iterator[Snapshot]:
        """The rows in request order, chunk by chunk (one empty chunk if there are none)."""
        return self._read()


def window_ends(window: WindowSpec, ts: F64) -> F64:
    """The end (seconds) of the LTE window at each clock: known without the log."""
    return (window.end_buckets(ts) * window.bucket).astype(np.float64)


@contextmanager
def streamed(
    log: InteractionLog,
    user_ids: npt.NDArray[np.str_],
    ts: npt.NDArray[np.float64],
    *,
    basis: BasisArtifact,
    window: WindowSpec,
    encoder: EncoderSpec,
    source: str = "log",
    blocks: int | None = None,
    chunk_events: int | None = None,
    chunk_rows: int | None = None,
) -> Iterator[SnapshotStream]:
    """The LTE of each ``(user_ids[i], ts[i])`` as the stream computes it at clock ``ts[i]``
    with every event of ``log`` delivered on time (file order breaks ties of equal time),
    computed block by block through temporary spill files and read back in request order
    (see the module docstring for the memory this takes). ``blocks`` overrides the
    number of user blocks (:func:`_blocks_for` otherwise), ``chunk_events`` and
    ``chunk_rows`` the chunk sizes (:data:`CHUNK_EVENTS`, :data:`CHUNK_ROWS`); none of
    them changes an answer. The files live in a
    :class:`tempfile.TemporaryDirectory` that is removed when the ``with`` ends, also on
    error.

    Users the log does not know get empty-window rows. Events whose item the basis does
    not know are skipped and counted (``unknown_items``); a log none of whose items the
    basis knows is refused (:class:`SnapshotError`, naming ``source``).
    """
    users_in = np.asarray(user_ids, dtype=np.str_).reshape(-1)
    clocks = np.asarray(ts, dtype=np.float64).reshape(-1)
    if len(users_in) != len(clocks):
        raise ValueError("user_ids and ts must have the same length")
    if not np.isfinite(clocks).all():
        raise SnapshotError(f"pair {int(np.flatnonzero(~np.isfinite(clocks))[0])}: ts not finite")
    chunk_events = chunk_events or CHUNK_EVENTS
    chunk_rows = chunk_rows or CHUNK_ROWS
    built = build_encoder(encoder, basis)
    kind = _answer_dtype(basis)
    n = len(users_in)
    n_blocks = blocks if blocks is not None else _blocks_for(len(log), n, kind.itemsize)
    if not 1 <= n_blocks <= MAX_BLOCKS:
        raise ValueError(f"blocks must be 1..{MAX_BLOCKS}")
    with tempfile.TemporaryDirectory(prefix="lte-snapshot-") as tmp:
        parts = _partition(
            log,
            basis,
            window,
            source=source,
            blocks=n_blocks,
            directory=Path(tmp),
            chunk_events=chunk_events,
        )
        if parts.unknown_items:
            logger.info(
                "%s: skipped %d events whose item is not in basis %s",
                source,
                parts.unknown_items,
                basis.basis_version,
            )
        pair_end = window.end_buckets(clocks)
        positions, answer_paths = _answered_blocks(
            parts,
            parts.users.lookup(users_in),
            pair_end,
            clocks,
            directory=Path(tmp),
            basis=basis,
            window=window,
            encoder=encoder,
            built=built,
        )

        def read() -> Iterator[Snapshot]:
            for lo in range(0, max(n, 1), chunk_rows):
                hi = min(n, lo + chunk_rows)
                m = hi - lo
                coefficients = np.full((m, basis.k), np.nan, dtype=np.float32)
                vectors = (
                    coefficients
                    if basis.is_identity
                    else np.full((m, basis.d), np.nan, dtype=np.float32)
                )
                n_events = np.zeros(m, dtype=np.int64)
                weight_sum = np.zeros(m, dtype=np.float64)
                for b in range(len(positions)):
                    first, last = np.searchsorted(positions[b], [lo, hi]).tolist()
                    if last == first:
                        continue
                    got = np.fromfile(
                        answer_paths[b],
                        dtype=kind,
                        count=last - first,
                        offset=first * kind.itemsize,
                    )
                    rows = positions[b][first:last] - lo
                    n_events[rows] = got["n_events"]
                    weight_sum[rows] = got["weight_sum"]
                    coefficients[rows] = got["coefficients"]
                    if vectors is not coefficients:
                        vectors[rows] = got["vectors"]
                yield Snapshot(
                    basis_version=basis.basis_version,
                    encoder=built.name,
                    window=window,
                    user_ids=users_in[lo:hi],
                    as_of=clocks[lo:hi],
                    window_start=((pair_end[lo:hi] - window.n_buckets) * window.bucket).astype(
                        np.float64
                    ),
                    window_end=(pair_end[lo:hi] * window.bucket).astype(np.float64),
                    n_events=n_events,
                    weight_sum=weight_sum,
                    coefficients=coefficients,
                    vectors=vectors,
                    unknown_items=parts.unknown_items,
                )

        yield SnapshotStream(
            basis_version=basis.basis_version,
            encoder=built.name,
            window=window,
            unknown_items=parts.unknown_items,
            blocks=n_blocks,
            rows=n,
            _read=read,
        )


def concatenated(chunks: Iterable[Snapshot]) -> Snapshot:
    """One :class:`Snapshot` of consecutive chunks (at least one)."""
    parts = list(chunks)
    first = parts[0]
    coefficients = np.concatenate([p.coefficients for p in parts])
    same = first.vectors is first.coefficients
    return Snapshot(
        basis_version=first.basis_version,
        encoder=first.encoder,
        window=first.window,
        user_ids=np.concatenate([p.user_ids for p in parts]),
        as_of=np.concatenate([p.as_of for p in parts]),
        window_start=np.concatenate([p.window_start for p in parts]),
        window_end=np.concatenate([p.window_end for p in parts]),
        n_events=np.concatenate([p.n_events for p in parts]),
        weight_sum=np.concatenate([p.weight_sum for p in parts]),
        coefficients=coefficients,
        vectors=coefficients if same else np.concatenate([p.vectors for p in parts]),
        unknown_items=first.unknown_items,
    )


def point_in_time(
    log: InteractionLog,
    user_ids: npt.NDArray[np.str_],
    ts: npt.NDArray[np.float64],
    *,
    basis: BasisArtifact,
    window: WindowSpec,
    encoder: EncoderSpec,
    source: str = "log",
    blocks: int | None = None,
    chunk_events: int | None = None,
    chunk_rows: int | None = None,
) -> Snapshot:
    """:func:`streamed`, all rows in one :class:`Snapshot` (for tests and small inputs:
    the whole output is in memory)."""
    with streamed(
        log,
        user_ids,
        ts,
        basis=basis,
        window=window,
        encoder=encoder,
        source=source,
        blocks=blocks,
        chunk_events=chunk_events,
        chunk_rows=chunk_rows,
    ) as stream:
        return concatenated(stream.chunks())


def _calls(steps: _Steps, events: _UserLog, n_buckets: int) -> list[list[I64]]:
    """Step indices per engine call, grouped by rank (each user's k-th clock is in rank
    ``k``; ranks run in order, so each user's clocks advance in time order), each rank
    cut where the events its steps may move exceed :data:`EVENTS_PER_CALL` or its users
    :data:`USERS_PER_CALL`. A step from end ``p`` to
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
    ranks: list[list[I64]] = []
    for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        members = by_rank[lo:hi]
        spent = np.cumsum(cost[members]) - cost[members]
        part = spent // EVENTS_PER_CALL + np.arange(len(members)) // USERS_PER_CALL
        cuts = np.flatnonzero(np.r_[True, part[1:] != part[:-1]])
        ranks.append(np.split(members, cuts[1:]))
    return ranks
