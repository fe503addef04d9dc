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

import collections
import itertools
import math
import operator
import os
import struct
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import cast

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
#: seeks :meth:`WindowStore.read_heads` makes before it judges the heads scattered
_HEAD_SEEKS_FREE = 64
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


def event_prefix(user: bytes) -> bytes:
    return EVENT + len(user).to_bytes(2, "big") + user


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
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            self._db = Rdict(str(self.path), _options())
        except Exception as exc:  # rocksdict raises plain Exception for I/O and lock errors
            raise StateStoreError(
                f"cannot open state store {self.path}: {exc}. Is another worker using this "
                "--state-dir?"
            ) from exc

    # -- engine reads -------------------------------------------------------------------------

    def read_heads(self, users: Sequence[bytes]) -> list[bytes | None]:
        """The users' heads, visited in key order with one iterator while they are mostly
        adjacent (a sweep's users are: stepping to the next head costs a quarter of a point
        lookup), and by one multi-get for the rest as soon as more than a quarter of them
        have needed a seek (an event batch's users are scattered over the key space, where
        the multi-get is the cheaper)."""
        n = len(users)
        if not n:
            return []
        keys = [HEAD + u for u in users]
        out: list[bytes | None] = [None] * n
        order = sorted(range(n), key=keys.__getitem__)
        it = self._db.iter()
        # invariant: ``key`` is the first key >= ``known`` (None: there is none)
        known: bytes | None = None
        key: bytes | None = None
        seeks = 0
        for done, j in enumerate(order):
            wanted = keys[j]
            if key != wanted:
                if known is not None and known <= wanted and (key is None or wanted < key):
                    continue  # absent: between where the iterator was sent and where it is
                if seeks > _HEAD_SEEKS_FREE + done // 4:
                    rest = order[done:]
                    found: list[bytes | None] = self._db.get([keys[i] for i in rest]) or []
                    for i, value in zip(rest, found, strict=True):
                        out[i] = value
                    return out
                it.seek(wanted)
                seeks += 1
                known = wanted
                key = it.key()
                if key != wanted:
                    continue
            out[j] = it.value()
            it.next()
            known = wanted + b"\x00"
            key = it.key()
        return out

    def read_ranges(self, users: Sequence[bytes], requests: RangeRequests) -> RangeResult:
        """The requested ranges, visited in key order with one iterator: a request whose
        start lies between where the iterator is known to stand and the key it stands on
        needs no seek (a seek costs far more than a step; a sweep's users are mostly adjacent
        in key order). Results come back in request order, as if each had been sought.

        The bounds are laid out by numpy and the loop does per request only what it must
        (a sweep reads one short range per user, so per-request Python is the cost)."""
        m = len(requests)
        prefixes = [event_prefix(users[u]) for u in requests.user.tolist()]
        # biased big-endian bounds (int64 -> uint64 wraps to value + 2^63)
        lo = (requests.lo.astype(np.uint64) + np.uint64(_BIAS)).astype(">u8").tobytes()
        hi = (requests.hi.astype(np.uint64) + np.uint64(_BIAS)).astype(">u8").tobytes()
        starts = [p + lo[8 * j : 8 * j + 8] for j, p in enumerate(prefixes)]
        req: list[int] = []
        keys: list[bytes] = []
        values: list[bytes] = []
        nxt = [int(NO_BUCKET)] * m
        it = self._db.iter()
        # invariant: ``key`` is the first key >= ``known`` (None: there is none)
        known: bytes | None = None
        key: bytes | None = None
        for j in sorted(range(m), key=starts.__getitem__):
            start, prefix = starts[j], prefixes[j]
            if known is None or start < known or (key is not None and start > key):
                it.seek(start)
                known = start
                key = it.key()
            if key is None or not key.startswith(prefix):
                continue
            stop = prefix + hi[8 * j : 8 * j + 8]
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
        request = np.asarray(req, dtype=np.int64)
        order = np.argsort(request, kind="stable")
        suffix = np.frombuffer(b"".join(keys), dtype=">u8").reshape(-1, 2)[order]
        vals = np.frombuffer(b"".join(values), dtype=_EVENT_VALUE_DTYPE)[order]
        return RangeResult(
            request=request[order],
            bucket=(suffix[:, 0] - np.uint64(_BIAS)).astype(np.int64),
            offset=suffix[:, 1].astype(np.int64),
            item=vals["item"].astype(np.uint32),
            weight=vals["weight"].astype(np.float32),
            next_bucket=np.asarray(nxt, dtype=np.int64),
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
        read = ReadOptions()
        # exclusive: the first key of a due time after now (due times are whole seconds)
        read.set_iterate_upper_bound(due_key(math.floor(now) + 1, b""))
        found = cast(Iterator[bytes], self._db.keys(from_key=after, read_opt=read))
        keys = list(itertools.islice(found, limit))
        # the smallest key after the last one returned
        return [key[9:] for key in keys], keys[-1] + b"\x00" if keys else after

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

    def engine_result(self, users: Sequence[bytes], result: EngineResult) -> None:
        """Record what the engine decided, in changelog-safe order."""
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
        if len(kept) < len(head_keys):
            gone_heads = [k for k, h in zip(head_keys, result.heads, strict=True) if h is None]
            _drain(map(batch.delete, gone_heads))
        changelog.extend(zip(head_keys, result.heads, strict=True))
        gone_keys = _event_records(users, gone.user, gone.bucket, gone.offset)
        _drain(map(batch.delete, gone_keys))
        changelog.extend(zip(gone_keys, itertools.repeat(None)))
        moved = np.flatnonzero(result.prev_next_change != result.next_change).tolist()
        before, after = result.prev_next_change.tolist(), result.next_change.tolist()
        for i in moved:
            self.reindex(users[i], before[i], after[i])

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
    prefixes = [event_prefix(u) for u in users]
    # a void view turns each 16-byte row into one bytes object, NUL bytes kept
    suffixes = suffix.view("V16").ravel().tolist()
    return list(map(operator.add, map(prefixes.__getitem__, user_idx.tolist()), suffixes))


def _event_values(item: npt.NDArray[np.uint32], weight: npt.NDArray[np.float32]) -> list[bytes]:
    vals = np.empty(len(item), dtype=_EVENT_VALUE_DTYPE)
    vals["item"] = item
    vals["weight"] = weight
    return cast(list[bytes], vals.view("V8").tolist())
