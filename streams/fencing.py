"""Fencing of zombie writers on a broker without transactions (issue 17).

Every changelog record carries its writer's *epoch* in a Kafka header. An owner that opens a
partition restores it, then claims the next epoch by appending a **fence record**
(``m fence`` = the epoch) and reads the changelog once more up to that fence. From then on
the accepted history of the partition is defined record by record, in log order:

* a fence whose epoch is higher than every fence before it starts a new epoch;
* a fence that is not higher (a claim that lost a race) is ignored;
* any other record is accepted if its epoch is not older than the current one, and ignored
  otherwise: it was written by a zombie after a newer owner had fenced it out.

Records written before fencing existed carry no header and count as epoch 0, so an old
changelog restores exactly as before (the first fence simply follows them).

A writer also proves, at every write, that nobody else wrote between its previous write and
this one: the changelog offsets it gets back must continue its own. When they do not, it
reads the records in between: a newer epoch means this writer lost the partition — it
commits nothing locally and stops (:class:`PartitionLostError`); older-epoch records are a
zombie's, ignored by restore, and the owner writes the keys they touched again under its own
epoch so that log compaction, which keeps the last record of a key, cannot keep the
zombie's. Because every local commit follows such a proof, a local store is always a prefix
of the accepted history: it can be *behind* it, never *beside* it. It can still be *ahead*
(a changelog that lost records, e.g. a broker that restarted empty): the store remembers the
offset, epoch and key of the last changelog record it holds, and an owner that does not find
that record at that offset rebuilds the partition from the changelog.

:class:`StallGuard` narrows the commonest zombie window: a process frozen (SIGSTOP, a VM
pause, a swap storm) for longer than the group could wait for it reads the changelog after
it wakes and before its next write (updates included); if a newer epoch has fenced it, it
stops without writing anything, before Kafka has even told it that it lost its partitions.
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
from collections.abc import Sequence

from streams.errors import StreamsError
from streams.window_store import META

#: Kafka header carrying the writer's epoch (8 bytes, big-endian, unsigned).
EPOCH_HEADER = "lte-epoch"
META_FENCE = b"fence"
FENCE_KEY = META + META_FENCE
#: the last changelog record a store holds: offset, epoch, key (see :func:`pack_tail`)
META_TAIL = b"changelog_tail"
_EPOCH = struct.Struct(">Q")
_TAIL = struct.Struct(">qQ")


class PartitionLostError(StreamsError):
    """This worker no longer owns a partition it was about to write (a newer epoch fenced it,
    or it was frozen past the session timeout); it stops before its next write. Restart it:
    it rebuilds what it owns from the changelog."""


def epoch_bytes(epoch: int) -> bytes:
    return _EPOCH.pack(epoch)


def epoch_headers(epoch: int) -> tuple[tuple[str, bytes], ...]:
    return ((EPOCH_HEADER, _EPOCH.pack(epoch)),)


def record_epoch(headers: Sequence[tuple[str, bytes]] | None) -> int:
    """The writer's epoch of a changelog record; 0 for records written before fencing."""
    for name, value in headers or ():
        if name == EPOCH_HEADER and len(value) == _EPOCH.size:
            return int(_EPOCH.unpack(value)[0])
    return 0


def fence_value(epoch: int) -> bytes:
    """A claim: the epoch, then a random nonce, so that two workers claiming the same epoch
    at once can tell whose claim the log accepted (the first one)."""
    return _EPOCH.pack(epoch) + os.urandom(16)


def fence_epoch(value: bytes | None) -> int:
    return int(_EPOCH.unpack_from(value)[0]) if value is not None and len(value) >= 8 else 0


def pack_tail(offset: int, epoch: int, key: bytes | None) -> bytes:
    return _TAIL.pack(offset, epoch) + (key or b"")


def unpack_tail(raw: bytes) -> tuple[int, int, bytes]:
    offset, epoch = _TAIL.unpack_from(raw)
    return int(offset), int(epoch), raw[_TAIL.size :]


class EpochFilter:
    """The accepted-history rule, applied record by record in log order."""

    def __init__(self, current: int = 0) -> None:
        #: the epoch of the last accepted fence
        self.current = current
        #: the highest epoch seen anywhere (accepted or not): a new claim must exceed it
        self.highest = current
        self.ignored = 0

    def accept(self, key: bytes | None, value: bytes | None, epoch: int) -> bool:
        self.highest = max(self.highest, epoch)
        if key == FENCE_KEY:
            claimed = fence_epoch(value)
            self.highest = max(self.highest, claimed)
            if claimed > self.current:
                self.current = claimed
                return True
            self.ignored += 1
            return False
        if epoch < self.current:
            self.ignored += 1
            return False
        return True


class StallGuard:
    """Counts freezes of this process longer than ``limit`` seconds.

    A ticker task records the time every ``interval``; a writer asks :meth:`stalls` first
    and, when it went up since the writer last asked, proves it still owns its partition
    before writing. After a freeze the writer may run before the ticker does, so
    :meth:`stalls` also measures the age of the last tick itself: no write slips through."""

    def __init__(self, limit: float, interval: float = 0.25) -> None:
        self.limit = limit
        self.interval = interval
        self._last: float | None = None  # not counting until the ticker runs
        self._stalls = 0
        self.longest = 0.0

    def stalls(self) -> int:
        now = time.monotonic()
        if self._last is not None and now - self._last > self.limit:
            self._stalls += 1
            self.longest = max(self.longest, now - self._last)
            self._last = now
        return self._stalls

    async def run(self) -> None:
        while True:
            self.stalls()
            self._last = time.monotonic()
            await asyncio.sleep(self.interval)
