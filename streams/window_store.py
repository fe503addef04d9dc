"""One input partition's window state in RocksDB (rocksdict, raw bytes only — nothing is
ever pickled).

Key layout, chosen so that every access the engine makes is a point lookup or one short
ordered scan inside a single user's key range::

    h <user>                                   head (lte_core.head)
    e <len u16> <user> <bucket+2^63 u64> <offset u64>   one event: item u32 | weight f32
    d <due+2^63 u64> <user>                    due-time index for the sweeper (derived)
    m <name>                                   metadata: changelog position, clock, config

Integers in keys are big-endian so byte order is numeric order. Heads and events are what
the changelog carries; the due index is rebuilt from heads, so it is never shipped.

Writes go through :class:`StoreWrite`, which collects one batch's mutations in a RocksDB
``WriteBatch`` (atomic on commit) and, in the same order, the changelog records: event puts,
then heads, then event deletes. That order is what keeps a changelog cut off mid-batch
consistent (see ``docs/guarantees`` in the README).
"""

from __future__ import annotations

import bisect
import collections
import itertools
import math
import operator
import os
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple, cast

import numpy as np
import numpy.typing as npt
from rocksdict import (
    BlockBasedOptions,
    DBCompressionType,
    Options,
    Rdict,
    ReadOptions,
    WriteBatch,
    WriteOptions,
)

from lte_core.engine import (
    NEVER,
    EngineResult,
    RangeRequests,
    RangeResult,
)
from lte_core.head import NO_BUCKET
from streams.errors import StateStoreError

HEAD = b"h"
EVENT = b"e"
DUE = b"d"
META = b"m"
_BIAS = 1 << 63
_U64 = struct.Struct(">Q")
#: heads (events) the first scan of a read returns at most; each further scan of the same
#: read doubles it up to the maximum (a scan judged sparse hands the rest to seeks)
_HEAD_SCAN_FIRST, _HEAD_SCAN_MAX = 64, 1024
_EVENT_SCAN_FIRST, _EVENT_SCAN_MAX = 256, 4096
#: requests in a row that :meth:`WindowStore._seek_ranges` found adjacent (no seek) before
#: it hands the rest back to scans
_ADJACENT_RUN = 8
#: fewer heads than this are read by one multi-get, never scanned
_HEAD_SCAN_MIN = 16
#: the scan size of :meth:`WindowStore.read_below` after a scan found mostly other users
_EVENT_SCAN_MIN = 16
_EVENT_VALUE_DTYPE = np.dtype([("item", "<u4"), ("weight", "<f4")])

META_CHANGELOG = b"changelog_offset"
META_CLOCK = b"clock"
META_CONFIG = b"config"
META_USERS = b"users"
META_EVENTS = b"events"
#: metadata the changelog carries with every state change, so a partition restored on a new
#: disk neither moves its clock back nor recounts its heads by a full scan
SHIPPED_META = (META_CLOCK, META_USERS, META_EVENTS)
CLOCK_FORMAT = struct.Struct(">d")

ChangelogRecord = tuple[bytes, bytes | None]
I64 = npt.NDArray[np.int64]


def event_prefix(user: bytes) -> bytes:
    return EVENT + len(user).to_bytes(2, "big") + user


class _EventLeads(dict[int, bytes]):
    """``EVENT`` and the user's length, per length (filled on first use)."""

    def __missing__(self, length: int) -> bytes:
        lead = self[length] = EVENT + length.to_bytes(2, "big")
        return lead


_EVENT_LEADS = _EventLeads()


def event_prefixes(users: Iterable[bytes]) -> list[bytes]:
    """:func:`event_prefix` of many users, by C iteration (the sweep's reads and every
    batch's writes build one per user)."""
    users = list(users)
    return list(map(operator.add, map(_EVENT_LEADS.__getitem__, map(len, users)), users))


def due_key(due: int, user: bytes) -> bytes:
    return DUE + _U64.pack(due + _BIAS) + user


def _options() -> Options:
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    # LZ4 on every level, the bottommost too: compaction runs on the worker's own cores
    # while it sweeps, and zstd there was 30 % of the CPU of a 3x10^5-user sweep (which
    # compacts the flushes of the writes before it) and made every read of the bottom
    # level decompress zstd; the heads' sums hardly compress either way
    opts.set_compression_type(DBCompressionType.lz4())
    # ... except the first two levels: they hold the newest writes, which compaction reads
    # and rewrites soon (a 10^6-user sweep, run right after its users were written, spent
    # 4 s of RocksDB's threads compacting them: 2.8 s without compressing L0/L1, and its
    # own reads of them decompress nothing); the bottommost level, where the state lives,
    # stays LZ4
    opts.set_compression_per_level(
        [DBCompressionType.none(), DBCompressionType.none()] + [DBCompressionType.lz4()] * 5
    )
    opts.set_bottommost_compression_type(DBCompressionType.lz4())
    opts.set_max_background_jobs(2)
    opts.set_keep_log_file_num(3)
    # Heads are point lookups (a multi-get per batch and per sweep step): a bloom filter per
    # SST file spares a lookup every file that cannot hold the key. Files written without
    # one are still read as before.
    table = BlockBasedOptions()
    table.set_bloom_filter(10, False)
    # 16 KiB blocks (RocksDB's default is 4): a head is 80 + 16·d bytes, so a 4 KiB block
    # held three heads at d=64 and a sweep, which reads heads and events in key order, paid
    # a block read (a pread, a decompression, a cache insert) per three users
    table.set_block_size(16 << 10)
    opts.set_block_based_table_factory(table)
    return opts


class WindowStore:
    """Read side for :class:`lte_core.engine.WindowEngine`, plus metadata and the sweep scan."""

    def __init__(self, path: str | os.PathLike[str], *, wal: bool = True) -> None:
        """``wal=False`` skips RocksDB's write-ahead log: right when a changelog is kept,
        because the changelog already holds every write that a crash could lose locally
        (a restart replays it from the last position the store recorded)."""
        self.path = Path(path)
        self._write_options = WriteOptions()
        # rocksdict's stub declares a method; at runtime it is a writable property.
        self._write_options.disable_wal = not wal  # type: ignore[method-assign,assignment]
        # scans stop at the end of their region (the next prefix byte)
        self._heads = _region(HEAD)
        self._events = _region(EVENT)
        # what a sweep reads once (and deletes) is not kept in the block cache, where it
        # would cost an insert and evict what the event batches read again
        self._heads_once = _region(HEAD, cache=False)
        self._events_once = _region(EVENT, cache=False)
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            self._db = Rdict(str(self.path), _options())
        except Exception as exc:  # rocksdict raises plain Exception for I/O and lock errors
            raise StateStoreError(
                f"cannot open state store {self.path}: {exc}. Is another worker using this "
                "--state-dir?"
            ) from exc

    # -- engine reads -------------------------------------------------------------------------

    def read_heads(self, users: Sequence[bytes], *, once: bool = False) -> list[bytes | None]:
        """The users' heads. Wanted keys are visited in key order by bounded scans of the
        head region (one ``items()`` call each, C iteration) while at least half of what a
        scan returns was asked for (a sweep's users are mostly adjacent in key order: a scan
        costs a fraction of a lookup per head); the rest come from one multi-get as soon as
        a scan returns mostly strangers (an event batch's users are scattered over the key
        space, where the multi-get is the cheaper)."""
        n = len(users)
        if not n:
            return []
        keys = list(map(HEAD.__add__, users))
        wanted = sorted(keys)
        found: dict[bytes, bytes] = {}
        pos, size = 0, min(_HEAD_SCAN_FIRST, n + 8)
        while pos < n and n >= _HEAD_SCAN_MIN:
            chunk = self._scan(wanted[pos], self._heads_once if once else self._heads, size)
            found.update(chunk)
            if len(chunk) < size:  # the scan reached the end of the head region
                pos = n
                break
            reached = bisect.bisect_right(wanted, chunk[-1][0], pos)
            asked, pos = reached - pos, reached
            if 2 * asked < size:
                break
            size = min(2 * size, _HEAD_SCAN_MAX)
        if pos < n:
            rest = wanted[pos:]
            values: list[bytes | None] = self._db.get(list[Any](rest)) or []
            found.update((k, v) for k, v in zip(rest, values, strict=True) if v is not None)
        return list(map(found.get, keys))

    def read_ranges(
        self, users: Sequence[bytes], requests: RangeRequests, *, once: bool = False
    ) -> RangeResult:
        """The requested ranges, visited in key order. While the requests are dense in the
        event region (a sweep's users mostly are), bounded scans read every key from the
        next request's start (one ``items()`` call, C iteration) and numpy assigns the keys
        to the requests they answer (:func:`_assign_scanned`); once a scan returns mostly
        keys nobody asked for, the rest are read by :meth:`_seek_ranges`, which seeks per
        request. Results come back in request order, as if each had been sought."""
        m = len(requests)
        prefixes = event_prefixes(map(users.__getitem__, requests.user.tolist()))
        # a range that ends before it starts is empty and still answers the first bucket
        # >= its start
        end = np.maximum(requests.lo, requests.hi)
        starts = list(map(operator.add, prefixes, _biased(requests.lo)))
        stops = list(map(operator.add, prefixes, _biased(end)))
        order = sorted(range(m), key=starts.__getitem__)
        nxt = np.full(m, NO_BUCKET, dtype=np.int64)
        parts: list[_Found] = []
        first_size = size = min(_EVENT_SCAN_FIRST, 2 * m + 16)
        region = self._events_once if once else self._events
        pos, scanning = 0, True
        while pos < m:
            if not scanning:
                part, pos = self._seek_ranges(order, pos, prefixes, starts, stops, nxt)
                parts.append(part)
                scanning, size = True, first_size
                continue
            chunk = self._scan(starts[order[pos]], region, size)
            if len(chunk) < size:  # the region's end: every request left is answered
                done = m
            else:
                last = chunk[-1][0]
                done = pos
                while done < m and stops[order[done]] <= last:
                    done += 1
                if done == pos:  # one range longer than the scan: seek it
                    scanning = False
                    continue
            if chunk:
                answered = np.asarray(order[pos:done], dtype=np.int64)
                part = _assign_scanned(
                    chunk,
                    answered,
                    [prefixes[j] for j in answered.tolist()],
                    requests.lo[answered],
                    end[answered],
                    nxt,
                )
                parts.append(part)
                # mostly other users' keys, or events past the ranges: seeking is cheaper
                scanning = 2 * (len(part.request) + done - pos) >= len(chunk)
            pos = done
            size = min(2 * size, _EVENT_SCAN_MAX)
        if not parts:
            parts.append(_Found.empty())
        found = _Found(*(np.concatenate(column) for column in zip(*parts, strict=True)))
        sort = np.argsort(found.request, kind="stable")
        return RangeResult(
            request=found.request[sort],
            bucket=found.bucket[sort],
            offset=found.offset[sort],
            item=found.item[sort].astype(np.uint32),
            weight=found.weight[sort].astype(np.float32),
            next_bucket=nxt,
        )

    def _scan(self, first: bytes, region: ReadOptions, size: int) -> list[tuple[bytes, bytes]]:
        """Up to ``size`` keys and values from ``first`` on, within ``region``."""
        items = self._db.items(from_key=first, read_opt=region)
        return cast(list[tuple[bytes, bytes]], list(itertools.islice(items, size)))

    def _seek_ranges(  # noqa: PLR0917 - the request columns read_ranges laid out
        self,
        order: Sequence[int],
        pos: int,
        prefixes: Sequence[bytes],
        starts: Sequence[bytes],
        stops: Sequence[bytes],
        nxt: I64,
    ) -> tuple[_Found, int]:
        """Requests ``order[pos:]`` (in key order) with one iterator: a request whose start
        lies between where the iterator is known to stand and the key it stands on needs no
        seek (a seek costs far more than a step). Stops after :data:`_ADJACENT_RUN`
        requests in a row needed none (the requests got dense: a scan is cheaper there);
        returns what it found and where it stopped."""
        req: list[int] = []
        keys: list[bytes] = []
        values: list[bytes] = []
        it = self._db.iter()
        # invariant: ``key`` is the first key >= ``known`` (None: there is none)
        known: bytes | None = None
        key: bytes | None = None
        adjacent = 0
        while pos < len(order) and adjacent < _ADJACENT_RUN:
            j = order[pos]
            pos += 1
            start, prefix = starts[j], prefixes[j]
            if known is None or start < known or (key is not None and start > key):
                it.seek(start)
                known = start
                key = it.key()
                adjacent = 0
            else:
                adjacent += 1
            if key is None or not key.startswith(prefix):
                continue
            stop = stops[j]
            last = None
            while key < stop:
                req.append(j)
                keys.append(key[-16:])
                values.append(it.value())
                it.next()
                last = key
                key = it.key()
                if key is None or not key.startswith(prefix):
                    break
            else:
                nxt[j] = _U64.unpack_from(key, len(prefix))[0] - _BIAS
            if last is not None:
                known = last + b"\x00"
        suffix = np.frombuffer(b"".join(keys), dtype=">u8").reshape(-1, 2)
        vals = np.frombuffer(b"".join(values), dtype=_EVENT_VALUE_DTYPE)
        found = _Found(
            request=np.asarray(req, dtype=np.int64),
            bucket=_unbias(suffix[:, 0]),
            offset=suffix[:, 1].astype(np.int64),
            item=vals["item"],
            weight=vals["weight"],
        )
        return found, pos

    def read_below(self, users: Sequence[bytes], below: int) -> RangeResult:
        """:meth:`read_ranges` of the requests ``user j: FROM_START <= bucket < below`` for
        every user (a sweep's emptied windows, whose reads all end at the new start), read
        once (no block cache). Every key of a wanted user is visited (its keys from
        ``below`` on only answer ``next_bucket``), in key order, by bounded scans that
        jump from the last key read to the next wanted user: no per-request start and stop
        keys, no assignment by rank."""
        k = len(users)
        nxt = np.full(k, NO_BUCKET, dtype=np.int64)
        if not k:
            return replace(RangeResult.empty(), next_bucket=nxt)
        prefixes = event_prefixes(users)
        index = dict(zip(prefixes, range(k), strict=True))
        wanted = sorted(prefixes)
        keys: list[bytes] = []
        values: list[bytes] = []
        owners: list[int] = []
        pos, start, size = 0, wanted[0], min(_EVENT_SCAN_FIRST, 2 * k + 16)
        while pos < k:
            chunk = self._scan(start, self._events_once, size)
            if not chunk:
                break
            got = list(map(operator.itemgetter(0), chunk))
            owner = list(map(index.get, map(_PREFIX_OF, got), itertools.repeat(-1)))
            hits = len(owner) - owner.count(-1)
            if hits:
                mine = [o >= 0 for o in owner]
                keys += itertools.compress(got, mine)
                values += itertools.compress(map(operator.itemgetter(1), chunk), mine)
                owners += itertools.compress(owner, mine)
            if len(chunk) < size:  # the end of the event region
                break
            last = got[-1]
            # users before the last key's are read whole; that one may go on past it
            pos = bisect.bisect_left(wanted, _PREFIX_OF(last), pos)
            if pos < k:
                start = max(last + b"\x00", wanted[pos])
            # mostly other users' keys: scan less at a time (each scan starts with a seek)
            size = min(2 * size, _EVENT_SCAN_MAX) if 2 * hits >= len(chunk) else _EVENT_SCAN_MIN
        if not keys:
            return replace(RangeResult.empty(), next_bucket=nxt)
        request = np.asarray(owners, dtype=np.int64)
        suffix = np.frombuffer(b"".join(map(_SUFFIX_OF, keys)), dtype=">u8").reshape(-1, 2)
        bucket = _unbias(suffix[:, 0])
        vals = np.frombuffer(b"".join(values), dtype=_EVENT_VALUE_DTYPE)
        inside = bucket < below
        past = ~inside
        # keys came in key order: per user in bucket order, so the first past ``below`` is
        # the smallest
        np.minimum.at(nxt, request[past], bucket[past])
        sort = np.argsort(request[inside], kind="stable")
        return RangeResult(
            request=request[inside][sort],
            bucket=bucket[inside][sort],
            offset=suffix[:, 1].astype(np.int64)[inside][sort],
            item=vals["item"][inside][sort].astype(np.uint32),
            weight=vals["weight"][inside][sort].astype(np.float32),
            next_bucket=nxt,
        )

    # -- sweeper --------------------------------------------------------------------------------

    def due_users(self, now: float, limit: int, after: bytes = DUE) -> tuple[list[bytes], bytes]:
        """Users whose window changes at or before ``now`` (oldest due first), scanning the
        due index from ``after`` on; also the key to continue from.

        A sweep deletes the index entries it visits, and RocksDB keeps their tombstones until
        compaction: a scan from the start of the index steps over every one of them again,
        which made a sweep of N users cost O(N^2 / batch). A pass continues where the
        previous batch ended instead (what it swept was due earlier, and what it re-indexed
        is due after ``now``, so nothing due is behind that point)."""
        # read once, then deleted; exclusive bound: the first key of a due time after now
        # (due times are whole seconds)
        read = _region(DUE, cache=False, end=due_key(math.floor(now) + 1, b""))
        found = cast(Iterator[bytes], self._db.keys(from_key=after, read_opt=read))
        keys = list(itertools.islice(found, limit))
        # the smallest key after the last one returned
        return list(map(_USER_OF_DUE, keys)), keys[-1] + b"\x00" if keys else after

    # -- metadata -------------------------------------------------------------------------------

    def get_meta(self, name: bytes) -> bytes | None:
        value: bytes | None = self._db.get(META + name)
        return value

    def get_int(self, name: bytes) -> int | None:
        raw = self.get_meta(name)
        return None if raw is None else int.from_bytes(raw, "big", signed=True)

    def get_raw(self, key: bytes) -> bytes | None:
        value: bytes | None = self._db.get(key)
        return value

    def put_meta(self, name: bytes, value: bytes) -> None:
        self._db.put(META + name, value, self._write_options)

    # -- writing --------------------------------------------------------------------------------

    def begin(self) -> StoreWrite:
        return StoreWrite(self)

    def write(self, batch: WriteBatch) -> None:
        self._db.write(batch, self._write_options)

    def close(self) -> None:
        self._db.close()

    def count_keys(self, prefix: bytes) -> int:
        n = 0
        it = self._db.iter()
        it.seek(prefix)
        while it.valid() and it.key().startswith(prefix):
            n += 1
            it.next()
        return n

    def live_bytes(self) -> int:
        """RocksDB's estimate of live data (keys + values after compaction)."""
        value = self._db.property_int_value("rocksdb.estimate-live-data-size")
        return int(value or 0)

    def disk_bytes(self) -> int:
        """Bytes of SST files (after ``compact()``, what the state really costs on disk)."""
        return sum(p.stat().st_size for p in self.path.glob("*.sst"))

    def compact(self) -> None:
        self._db.flush()
        self._db.compact_range(None, None)


class StoreWrite:
    """One batch's mutations: a RocksDB WriteBatch plus the changelog records to ship first."""

    def __init__(self, store: WindowStore) -> None:
        self._store = store
        self.batch = WriteBatch(raw_mode=True)
        self.changelog: list[ChangelogRecord] = []

    def engine_result(
        self, users: Sequence[bytes], result: EngineResult, *, due_cleared: bool = False
    ) -> None:
        """Record what the engine decided, in changelog-safe order. ``due_cleared``: the
        users' due-index entries are already deleted (:meth:`clear_due`, a sweep's), so
        only their new ones are put."""
        put, gone = result.put, result.delete
        batch, changelog = self.batch, self.changelog
        # per-record loops run as C iteration (map/extend): these are the worker's
        # per-event writes, where a Python-level loop body costs more than RocksDB's put
        puts = _event_records(users, put.user, put.bucket, put.offset)
        values = _event_values(put.item, put.weight)
        _drain(map(batch.put, puts, values))
        changelog.extend(zip(puts, values, strict=True))
        head_keys = [HEAD + user for user in users]
        kept = [(k, h) for k, h in zip(head_keys, result.heads, strict=True) if h is not None]
        _drain(itertools.starmap(batch.put, kept))
        if not kept:  # every head deleted (a sweep's emptied windows)
            _drain(map(batch.delete, head_keys))
        elif len(kept) < len(head_keys):
            gone_heads = [k for k, h in zip(head_keys, result.heads, strict=True) if h is None]
            _drain(map(batch.delete, gone_heads))
        changelog.extend(zip(head_keys, result.heads, strict=True))
        gone_keys = _event_records(users, gone.user, gone.bucket, gone.offset)
        _drain(map(batch.delete, gone_keys))
        changelog.extend(zip(gone_keys, itertools.repeat(None)))
        after = result.next_change.tolist()
        if due_cleared:
            for i in np.flatnonzero(result.next_change != NEVER).tolist():
                self.batch.put(due_key(after[i], users[i]), b"")
            return
        moved = np.flatnonzero(result.prev_next_change != result.next_change).tolist()
        before = result.prev_next_change.tolist()
        for i in moved:
            self.reindex(users[i], before[i], after[i])

    def clear_due(self, first: bytes, end: bytes) -> None:
        """Delete the due-index keys ``first <= key < end`` by one range tombstone: a sweep
        step visited every live key there (:meth:`WindowStore.due_users`), so one
        tombstone replaces a point delete per swept user (and the scans that step over
        them)."""
        self.batch.delete_range(first, end)

    def reindex(self, user: bytes, before: int, after: int) -> None:
        if before == after:
            return
        if before != NEVER:
            self.batch.delete(due_key(before, user))
        if after != NEVER:
            self.batch.put(due_key(after, user), b"")

    def put_raw(self, key: bytes, value: bytes | None) -> None:
        if value is None:
            self.batch.delete(key)
        else:
            self.batch.put(key, value)

    def meta(self, name: bytes, value: bytes, *, shipped: bool = False) -> None:
        """Metadata; ``shipped`` also sends it in this batch's changelog records (last)."""
        self.batch.put(META + name, value)
        if shipped:
            self.changelog.append((META + name, value))

    def meta_int(self, name: bytes, value: int, *, shipped: bool = False) -> None:
        self.meta(name, value.to_bytes(8, "big", signed=True), shipped=shipped)

    def commit(self) -> None:
        self._store.write(self.batch)


def _region(prefix: bytes, *, cache: bool = True, end: bytes | None = None) -> ReadOptions:
    """Reads of the keys under ``prefix`` (up to ``end``, exclusive, when given);
    ``cache=False`` for what is read once (not inserted into the block cache)."""
    read = ReadOptions()
    if not cache:
        read.fill_cache(False)  # type: ignore[call-arg]  # the stub omits the flag
    read.set_iterate_upper_bound(end if end is not None else bytes([prefix[0] + 1]))
    return read


class _Found(NamedTuple):
    """Events found for some requests (``request`` numbers them), in any order."""

    request: I64
    bucket: I64
    offset: I64
    item: npt.NDArray[np.uint32]
    weight: npt.NDArray[np.float32]

    @classmethod
    def empty(cls) -> _Found:
        r = RangeResult.empty()
        return cls(r.request, r.bucket, r.offset, r.item, r.weight)


_PREFIX_OF = operator.itemgetter(slice(None, -16))
_USER_OF_DUE = operator.itemgetter(slice(len(DUE) + _U64.size, None))  # after due_key's lead
_SUFFIX_OF = operator.itemgetter(slice(-16, None))


def _biased(values: I64) -> list[bytes]:
    """Each value as 8 big-endian bytes, biased (int64 -> uint64 wraps to value + 2^63) so
    that byte order is numeric order."""
    biased = (values.astype(np.uint64) + np.uint64(_BIAS)).astype(">u8")
    # a void view turns each row into one bytes object, NUL bytes kept
    return cast(list[bytes], biased.view("V8").tolist())


def _unbias(column: npt.NDArray[np.uint64]) -> I64:
    return (column - np.uint64(_BIAS)).astype(np.int64)


def _assign_scanned(  # noqa: PLR0917 - the columns of the answered requests
    chunk: list[tuple[bytes, bytes]],
    answered: I64,
    prefixes: list[bytes],
    lo: I64,
    end: I64,
    nxt: I64,
) -> _Found:
    """The events of requests ``answered`` (user key prefix, buckets ``lo <= b < end``)
    among ``chunk``, the consecutive event keys from the first request's start up to past
    the last one's end; sets ``nxt`` of each to the bucket of the user's first key at or
    past ``end``, when there is one. Keys sort by user prefix, then bucket (prefixes are
    prefix-free: their length leads), so a rank ``block · width + bucket rank`` is sorted
    and each request's events are one ``searchsorted`` slice of it."""
    keys = list(map(operator.itemgetter(0), chunk))
    p = len(keys)
    pk = list(map(_PREFIX_OF, keys))
    block = np.zeros(p, dtype=np.int64)
    np.cumsum(
        np.fromiter(map(operator.ne, pk[1:], pk[:-1]), dtype=bool, count=p - 1), out=block[1:]
    )
    block_of = dict(zip(pk, block.tolist(), strict=True))
    owner = np.fromiter(
        map(block_of.get, prefixes, itertools.repeat(-1)), dtype=np.int64, count=len(prefixes)
    )
    suffix = np.frombuffer(b"".join(map(_SUFFIX_OF, keys)), dtype=">u8").reshape(p, 2)
    bucket = _unbias(suffix[:, 0])
    levels = np.unique(bucket)
    width = len(levels) + 1
    rank = block * width + np.searchsorted(levels, bucket)
    first = np.searchsorted(rank, owner * width + np.searchsorted(levels, lo))
    past = np.searchsorted(rank, owner * width + np.searchsorted(levels, end))
    present = owner >= 0
    count = np.where(present, past - first, 0)
    follows = present & (past < p)
    follows[follows] = block[past[follows]] == owner[follows]
    nxt[answered[follows]] = bucket[past[follows]]
    total = int(count.sum())
    idx = np.repeat(first - (np.cumsum(count) - count), count) + np.arange(total)
    vals = np.frombuffer(b"".join(map(operator.itemgetter(1), chunk)), dtype=_EVENT_VALUE_DTYPE)
    return _Found(
        request=np.repeat(answered, count),
        bucket=bucket[idx],
        offset=suffix[idx, 1].astype(np.int64),
        item=vals["item"][idx],
        weight=vals["weight"][idx],
    )


def _drain(calls: Iterable[object]) -> None:
    """Run an iterator of calls for their effect, at C speed."""
    collections.deque(calls, maxlen=0)


def _event_records(
    users: Sequence[bytes],
    user_idx: npt.NDArray[np.int64],
    bucket: npt.NDArray[np.int64],
    offset: npt.NDArray[np.int64],
) -> list[bytes]:
    if len(user_idx) == 0:
        return []
    suffix = np.empty((len(user_idx), 2), dtype=">u8")
    suffix[:, 0] = bucket.astype(np.uint64) + np.uint64(_BIAS)
    suffix[:, 1] = offset.astype(np.uint64)
    prefixes = event_prefixes(users)
    # a void view turns each 16-byte row into one bytes object, NUL bytes kept
    suffixes = suffix.view("V16").ravel().tolist()
    return list(map(operator.add, map(prefixes.__getitem__, user_idx.tolist()), suffixes))


def _event_values(item: npt.NDArray[np.uint32], weight: npt.NDArray[np.float32]) -> list[bytes]:
    vals = np.empty(len(item), dtype=_EVENT_VALUE_DTYPE)
    vals["item"] = item
    vals["weight"] = weight
    return cast(list[bytes], vals.view("V8").tolist())
