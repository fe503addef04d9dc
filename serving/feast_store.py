"""The Feast sink: ``lte refresher --store feast://REPO`` pushes LTEs to the online store of a
Feast repository written by ``lte feast-repo`` (:mod:`serving.feast_repo`).

Ordering. Feast 0.67's Redis online store orders writes by event timestamp, and only per
batch: it reads the stored timestamps in one round trip and writes in another (its own code
calls the race "rare"), and it skips a row whose timestamp is not *strictly* newer, so a
newer LTE sharing its ``as_of`` with the stored one would be lost. This sink keeps the
product's rule instead — the same monotonic order as every other backend
(:mod:`serving.online_store`) — with a **ledger**: the product's own store
(:class:`~serving.redis_store.RedisStore`, or the cluster one) on the Redis that Feast's online
store uses. A batch:

1. goes through the ledger's atomic compare-and-write script, which says per update whether
   it is the newest (``written``/``duplicate``) or older than what is held (``stale``);
2. every non-stale update is pushed to Feast (``push_async``, ``PushMode.ONLINE``; the
   repository sets ``skip_dedup: true`` so Feast writes what it is given);
3. the ledger is read back for the pushed users: if another refresher recorded a newer LTE
   between 1 and 2 (only during a partition handover), that newer LTE is pushed again,
   until what was pushed last is what the ledger holds. So the last push of every user is
   its newest LTE, whatever the interleaving, and a crash between 1 and 2 is repaired by
   the redelivery (a ``duplicate`` is pushed again).

The ledger holds full entries, so ``lte serve --store feast://REPO`` (or ``redis://`` on the
same Redis) serves the same LTEs through the product's API. Reads (``get_many``,
``versions``) and ``ping`` are the ledger's.

Feast's Redis client failing (a connection refused, a timeout) is a
:class:`~serving.errors.StoreUnavailableError` like any store outage: the refresher retries
the batch, and pushing it again is harmless. A pair with no view in the repository is a
:class:`~serving.feast_repo.FeastRepoError`, which stops the refresher with a message naming
the ``lte feast-repo`` command to run.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from feast import FeatureStore
from feast.data_source import PushMode
from redis.exceptions import RedisError

from lte_core.update_columns import UpdateColumns
from serving.errors import StoreUnavailableError
from serving.feast_repo import (
    FLOAT_FEATURES,
    TAG_BASIS_VERSION,
    TAG_ENCODER,
    VECTOR_FEATURES,
    FeastRepoError,
    ledger_location,
)
from serving.online_store import (
    STALE,
    BatchWrite,
    OnlineStore,
    StoredLTE,
    StoreKey,
    VersionPair,
)
from serving.store_url import FeastLocation, open_store

MAX_CONVERGE_ROUNDS = 8
log = logging.getLogger(__name__)


class FeastStore(OnlineStore):
    def __init__(self, location: FeastLocation) -> None:
        self._location = location
        if not (location.repo / "feature_store.yaml").is_file():
            raise FeastRepoError(
                f"{location.repo}: no feature_store.yaml; write the repository with "
                "`lte feast-repo --basis DIR --encoder NAME --out REPO`"
            )
        self._feast = FeatureStore(repo_path=str(location.repo))
        online = self._feast.config.online_store
        if getattr(online, "type", None) != "redis":
            raise FeastRepoError(
                f"{location.repo}: the Feast sink needs Feast's Redis online store "
                f"(online_store.type: redis), found {getattr(online, 'type', online)!r}"
            )
        redis_type = getattr(online.redis_type, "value", str(online.redis_type))
        self._ledger = open_store(
            ledger_location(redis_type, online.connection_string), writer=True
        )
        self._sources: dict[tuple[str, str], str] = {}

    def describe(self) -> str:
        return f"{self._location.describe()} (ledger {self._ledger.describe()})"

    async def write_batch(self, updates: UpdateColumns, *, stored_at: float) -> BatchWrite:
        written = await self._ledger.write_batch(updates, stored_at=stored_at)
        # per key, the last row the ledger did not refuse (a later one in the batch won)
        fresh_rows: dict[int, int] = {}
        keys = updates.key_codes().tolist()
        for i, code in enumerate(written.outcomes.tolist()):
            if code != STALE:
                fresh_rows[keys[i]] = i
        fresh = updates.take(sorted(fresh_rows.values()))
        await self._push(fresh)
        await self._converge(fresh)
        return written

    async def _converge(self, pushed: UpdateColumns) -> None:
        """Push again whatever the ledger now holds that is newer than what was pushed."""
        orders = pushed.order.tolist()
        keys = [
            StoreKey(b, e, u)
            for b, e, u in zip(pushed.basis_version, pushed.encoder, pushed.user_id, strict=True)
        ]
        for _ in range(MAX_CONVERGE_ROUNDS):
            if not keys:
                return
            held = await self._ledger.get_many(keys)
            newer = [
                entry.update
                for order, entry in zip(orders, held, strict=True)
                if entry is not None and entry.update.order_key() != tuple(order)
            ]
            keys = [StoreKey.of(u) for u in newer]
            orders = [list(u.order_key()) for u in newer]
            if newer:
                log.info("%d users got a newer LTE from another writer; pushing it", len(newer))
                await self._push(UpdateColumns.of(newer))
        raise StoreUnavailableError(
            f"{self.describe()}: the ledger kept moving for {MAX_CONVERGE_ROUNDS} rounds; "
            "the batch is retried"
        )

    async def _push(self, updates: UpdateColumns) -> None:
        pair_of, pairs = updates.pair_codes()
        for code, pair in enumerate(pairs):
            source = self._push_source(pair)
            group = updates.take(np.flatnonzero(pair_of == code))
            try:
                with warnings.catch_warnings():
                    # Feast warns on every push that its online-write API is experimental.
                    warnings.simplefilter("ignore")
                    await self._feast.push_async(source, push_frame(group), to=PushMode.ONLINE)
            except (RedisError, OSError) as exc:
                raise StoreUnavailableError(
                    f"Feast online store of {self._location.describe()}: "
                    f"{type(exc).__name__}: {exc}. Updates are retried, none is dropped."
                ) from exc

    def _push_source(self, pair: tuple[str, str]) -> str:
        found = self._sources.get(pair)
        if found is None:
            self._sources = self._read_sources()
            found = self._sources.get(pair)
        if found is None:
            basis_version, encoder = pair
            raise FeastRepoError(
                f"{self._location.repo}: no Feast view for basis_version={basis_version} "
                f"encoder={encoder}; run `lte feast-repo --basis <that basis> --encoder "
                f"{encoder} --out {self._location.repo}` (it applies the repository)"
            )
        return found

    def _read_sources(self) -> dict[tuple[str, str], str]:
        """``(basis_version, encoder)`` -> push source name, from the registry's tags."""
        self._feast.refresh_registry()  # type: ignore[no-untyped-call]
        out: dict[tuple[str, str], str] = {}
        for view in self._feast.list_feature_views():
            tags = view.tags or {}
            stream = view.stream_source
            if TAG_BASIS_VERSION in tags and TAG_ENCODER in tags and stream is not None:
                out[(tags[TAG_BASIS_VERSION], tags[TAG_ENCODER])] = stream.name
        return out

    async def get_many(self, keys: Sequence[StoreKey]) -> list[StoredLTE | None]:
        return await self._ledger.get_many(keys)

    async def get_many_raw(self, keys: Sequence[StoreKey]) -> list[bytes | None]:
        return await self._ledger.get_many_raw(keys)

    async def versions(self) -> list[VersionPair]:
        return await self._ledger.versions()

    async def ping(self) -> None:
        await self._ledger.ping()

    async def close(self) -> None:
        await self._ledger.close()
        with contextlib.suppress(Exception):  # best effort: the process is stopping
            await self._feast.close()


def push_frame(updates: UpdateColumns) -> pd.DataFrame:
    """The frame a view's PushSource takes: one row per update, ``event_timestamp`` =
    ``as_of`` (UTC). An emptied window has null vectors and ``n_events = 0``."""
    columns: dict[str, Any] = {
        "user_id": list(updates.user_id),
        "event_timestamp": pd.to_datetime(updates.as_of, unit="s", utc=True),
        "n_events": updates.n_events.astype(np.int64),
    }
    for name in FLOAT_FEATURES:
        columns[name] = np.asarray(getattr(updates, name), dtype=np.float64)
    for name in VECTOR_FEATURES:
        columns[name] = [_as_list(raw) for raw in getattr(updates, name)]
    return pd.DataFrame(columns)


def _as_list(raw: bytes | None) -> list[float] | None:
    return None if raw is None else np.frombuffer(raw, dtype="<f4").tolist()


__all__ = ["FeastStore", "push_frame"]
