"""The online store contract: what every backend (Redis, embedded RocksDB) guarantees.

The refresher is the only writer; the read API and tools only read. Entries are keyed by
``(basis_version, encoder, user_id)`` so several bases and encoders live side by side and a
rollback is just reading the older pair (DESIGN 3.5).

Rules every backend implements, and ``tests/integration/test_online_store_contract.py``
checks against each of them:

* **Monotonic.** An update is written only if its order key (:meth:`LTEUpdate.order_key`:
  the per-user ``version``, which only grows, whatever the clocks say; ``(as_of, due_at)``
  for entries and records older than the field, which rank below every versioned one) is not
  older than the stored entry's; an older one is skipped (outcome ``stale``). Kafka redelivers after
  a crash and partitions may be consumed out of order after a rebalance, so the store, not
  the consumer, is where "newest wins" is enforced. The comparison and the write are one
  atomic step (a Lua script in Redis, the single writer's batch in RocksDB): no
  read-then-write race with another refresher.
* **Idempotent.** Writing the same update again leaves the same entry (outcome
  ``duplicate``; only ``stored_at`` moves). On an exact tie of order keys the later write
  wins, which is also the later record of the topic, so a replay converges to what the
  first pass left.
* **Emptied windows are markers, not deletions.** An update with ``n_events = 0`` replaces
  the entry with a header-only marker (no vectors). Deleting instead would let an older,
  non-empty update delivered late resurrect the user; the marker keeps the order key.
* **Columnar, in order.** A batch is an :class:`~lte_core.update_columns.UpdateColumns`
  (the refresher builds no object per update); its rows are applied in row order, so a key
  that appears twice ends with the newer of the two (the later row on a tie), exactly as if
  each row were written alone. The answer is columnar too (:class:`BatchWrite`).
* **Time.** ``stored_at`` is the writer's wall clock when it wrote the batch; staleness
  (``lte_staleness_seconds``) is measured against ``due_at`` from it.
"""

from __future__ import annotations

import asyncio
import enum
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from lte_core.update import LTEUpdate
from lte_core.update_columns import UpdateColumns
from serving.errors import StoreUnavailableError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StoreKey:
    basis_version: str
    encoder: str
    user_id: str

    @classmethod
    def of(cls, update: LTEUpdate) -> StoreKey:
        return cls(update.basis_version, update.encoder, update.user_id)


@dataclass(frozen=True, slots=True)
class StoredLTE:
    """One entry as read back: the update that was written, and when it was written."""

    update: LTEUpdate
    stored_at: float

    def to_dict(self) -> dict[str, Any]:
        return {**self.update.to_dict(), "stored_at": self.stored_at}


@dataclass(frozen=True, slots=True)
class VersionPair:
    """A ``(basis_version, encoder)`` the refresher has written, and when it last did."""

    basis_version: str
    encoder: str
    last_written_at: float


class WriteOutcome(enum.Enum):
    WRITTEN = "written"
    DUPLICATE = "duplicate"
    STALE = "stale"


#: :attr:`BatchWrite.outcomes` codes, which are also the Redis script's
OUTCOMES = (WriteOutcome.WRITTEN, WriteOutcome.DUPLICATE, WriteOutcome.STALE)
WRITTEN, DUPLICATE, STALE = 0, 1, 2


@dataclass(frozen=True, slots=True)
class BatchWrite:
    """What happened to each row of a batch: ``outcomes[i]`` indexes :data:`OUTCOMES`, and
    ``previous[i]`` is the encoded entry row ``i`` replaced or compared equal to (``None``
    when there was none, and for a stale row), so the refresher measures drift without
    another round trip and without decoding entries into objects."""

    outcomes: npt.NDArray[np.int8]
    previous: list[bytes | None]

    @classmethod
    def empty(cls) -> BatchWrite:
        return cls(np.zeros(0, dtype=np.int8), [])


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What happened to one update of a batch. ``previous`` is the entry it replaced (or
    compared equal to), so the refresher measures drift without another round trip."""

    outcome: WriteOutcome
    previous: StoredLTE | None


class OnlineStore(ABC):
    """Storage for the latest LTE of every ``(basis_version, encoder, user_id)``."""

    @abstractmethod
    async def write_batch(self, updates: UpdateColumns, *, stored_at: float) -> BatchWrite:
        """Apply the rows of ``updates`` in order under the monotonic rule; one outcome per
        row. Idempotent: the same batch applied twice leaves the same entries.

        When this returns, every write is durable as far as the backend's persistence goes
        (RocksDB: the WAL is synced; Redis: whatever ``appendfsync`` says), so the caller may
        commit its input offsets. On :class:`~serving.errors.StoreUnavailableError` any prefix of
        the batch may have been applied; applying the whole batch again is safe.
        """

    @abstractmethod
    async def get_many(self, keys: Sequence[StoreKey]) -> list[StoredLTE | None]:
        """The entries for ``keys`` in order, ``None`` where there is none."""

    async def get_many_raw(self, keys: Sequence[StoreKey]) -> list[bytes | None]:
        """The entries for ``keys`` as the bytes of :mod:`serving.store_format` (``None``
        where there is none), unchecked: the read API answers from them without building an
        update per read. A backend that holds those bytes returns them as stored; this
        default encodes what :meth:`get_many` returns."""
        from serving.store_format import encode_entry  # noqa: PLC0415 - it imports this module

        return [
            None if found is None else encode_entry(found.update, found.stored_at)
            for found in await self.get_many(keys)
        ]

    @abstractmethod
    async def versions(self) -> list[VersionPair]:
        """Every pair ever written, so readers can default to the most recent one."""

    @abstractmethod
    async def ping(self) -> None:
        """Return if the store answers; raise :class:`~serving.errors.StoreUnavailableError`."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    def describe(self) -> str:
        """Where the store is, for logs (no secrets)."""


async def bounded_store_call(call: Awaitable[T], seconds: float, store: OnlineStore) -> T:
    """``call``, or :class:`StoreUnavailableError` after ``seconds``: a hung store (Redis
    stopped, a dead connection) counts as down now, not after the client's socket timeout."""
    try:
        # asyncio.timeout, not wait_for: no task per call (a read API request makes one)
        async with asyncio.timeout(seconds):
            return await call
    except TimeoutError as exc:
        raise StoreUnavailableError(
            f"{store.describe()} did not answer within {seconds:g}s"
        ) from exc
