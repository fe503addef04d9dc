"""The embedded online store: one RocksDB directory on this machine (rocksdict, raw bytes
only — nothing is ever pickled).

One process writes: RocksDB locks the directory, so a second refresher on the same path fails
to open (use Redis to scale out). That single writer is what makes the monotonic check
atomic here: the refresher's batches are serialised, each compared against the stored order
keys (the per-user version, :meth:`LTEUpdate.order_key`) on a worker thread, off the event
loop that serves reads, and applied as one ``WriteBatch`` with a synced WAL, so a batch is
durable, even across a power cut, before the refresher commits its offsets.

A process that only reads (``lte serve`` on its own) opens the directory as a RocksDB
*secondary*: a read-only follower that replays the writer's log, at most every
:data:`CATCH_UP_SECONDS` seconds and only when asked to read, so its reads trail the writer by
about that much.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import struct
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rocksdict import AccessType, DBCompressionType, Options, Rdict, WriteBatch, WriteOptions

from lte_core.update_columns import UpdateColumns
from serving.errors import StoreOpenError, StoreUnavailableError
from serving.online_store import (
    DUPLICATE,
    STALE,
    BatchWrite,
    OnlineStore,
    StoredLTE,
    StoreKey,
    VersionPair,
)
from serving.store_format import (
    PAIRS_KEY,
    decode_found,
    encode_entries,
    entry_key,
    entry_keys,
    is_entry,
    order_key_of,
    pair_field,
    parse_pair_field,
    user_key,
)

CATCH_UP_SECONDS = 0.1
_PAIRS_PREFIX = PAIRS_KEY + b":"
_WHEN = struct.Struct("<d")


def _options() -> Options:
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.set_compression_type(DBCompressionType.lz4())
    opts.set_keep_log_file_num(3)
    opts.set_max_open_files(-1)  # required of a secondary; harmless for the writer
    return opts


class RocksDBStore(OnlineStore):
    def __init__(self, path: Path, *, writer: bool) -> None:
        self.path = path
        self._writer = writer
        self._secondary_dir: Path | None = None
        self._caught_up = 0.0
        if not writer and not (path / "CURRENT").is_file():
            raise StoreOpenError(
                f"{path} is not a RocksDB store yet; start the refresher on it first "
                "(or run `lte refresher --serve` to read and write in one process)"
            )
        try:
            if writer:
                path.mkdir(parents=True, exist_ok=True)
                self._db = Rdict(str(path), _options())
            else:
                self._secondary_dir = Path(tempfile.mkdtemp(prefix="lte-store-follower-"))
                self._db = Rdict(
                    str(path),
                    _options(),
                    access_type=AccessType.secondary(str(self._secondary_dir)),
                )
        except Exception as exc:  # rocksdict raises plain Exception for I/O and lock errors
            self._remove_secondary_dir()
            raise StoreOpenError(
                f"cannot open the RocksDB store {path}: {exc}. Only one process may write it: "
                "is another refresher running on this path?"
            ) from exc
        if writer:
            durable = WriteOptions()
            durable.sync = True
            self._db.set_write_options(durable)

    def describe(self) -> str:
        return f"rocksdb://{self.path}" + ("" if self._writer else " (read-only follower)")

    async def write_batch(self, updates: UpdateColumns, *, stored_at: float) -> BatchWrite:
        """The compare-and-write runs on a worker thread: a synced WAL write takes
        milliseconds, and the read API may share this event loop (``--serve``). Batches are
        still serialised (the refresher awaits each), which keeps the check atomic."""
        if not self._writer:
            raise StoreOpenError(f"{self.describe()} was opened read-only")
        if not len(updates):
            return BatchWrite.empty()
        return await asyncio.to_thread(self._write_batch, updates, stored_at)

    def _write_batch(self, updates: UpdateColumns, stored_at: float) -> BatchWrite:
        raw_keys = entry_keys(updates, layout=user_key)
        try:
            found: list[bytes | None] = self._db.get([*raw_keys]) or []
        except Exception as exc:
            raise self._unavailable(exc) from exc
        values = encode_entries(updates, stored_at)
        latest: dict[bytes, bytes] = {}
        batch = WriteBatch(raw_mode=True)
        outcomes = np.zeros(len(updates), dtype=np.int8)
        previous: list[bytes | None] = [None] * len(updates)
        orders = updates.order.tolist()
        for i, (raw, stored, value) in enumerate(zip(raw_keys, found, values, strict=True)):
            old = latest.get(raw, stored)
            if old is not None and is_entry(old):
                have = order_key_of(old)
                new = tuple(orders[i])
                if new < have:
                    outcomes[i] = STALE
                    continue
                if new == have:
                    outcomes[i] = DUPLICATE
            batch.put(raw, value)
            latest[raw] = value
            previous[i] = old
        _, pairs = updates.pair_codes()
        for basis_version, encoder in pairs:
            batch.put(_PAIRS_PREFIX + pair_field(basis_version, encoder), _WHEN.pack(stored_at))
        try:
            self._db.write(batch)
        except Exception as exc:
            raise self._unavailable(exc) from exc
        return BatchWrite(outcomes, previous)

    async def get_many(self, keys: Sequence[StoreKey]) -> list[StoredLTE | None]:
        return decode_found(keys, await self.get_many_raw(keys))

    async def get_many_raw(self, keys: Sequence[StoreKey]) -> list[bytes | None]:
        if not keys:
            return []
        self._follow()
        try:
            found: list[bytes | None] = self._db.get([entry_key(k) for k in keys]) or []
        except Exception as exc:
            raise self._unavailable(exc) from exc
        return found

    async def versions(self) -> list[VersionPair]:
        self._follow()
        pairs: list[VersionPair] = []
        it = self._db.iter()
        it.seek(_PAIRS_PREFIX)
        while it.valid():
            key: bytes = it.key()
            if not key.startswith(_PAIRS_PREFIX):
                break
            basis_version, encoder = parse_pair_field(key[len(_PAIRS_PREFIX) :])
            pairs.append(VersionPair(basis_version, encoder, _WHEN.unpack(it.value())[0]))
            it.next()
        return pairs

    async def ping(self) -> None:
        self._follow()
        try:
            self._db.get(PAIRS_KEY)
        except Exception as exc:
            raise self._unavailable(exc) from exc

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self._db.close()
        self._remove_secondary_dir()

    def _follow(self) -> None:
        """A follower replays the writer's new log records before it reads."""
        if self._writer or time.monotonic() - self._caught_up < CATCH_UP_SECONDS:
            return
        try:
            self._db.try_catch_up_with_primary()
        except Exception as exc:
            raise self._unavailable(exc) from exc
        self._caught_up = time.monotonic()

    def _remove_secondary_dir(self) -> None:
        if self._secondary_dir is not None:
            shutil.rmtree(self._secondary_dir, ignore_errors=True)
            self._secondary_dir = None

    def _unavailable(self, exc: Exception) -> StoreUnavailableError:
        return StoreUnavailableError(f"RocksDB store {self.path}: {exc}")
