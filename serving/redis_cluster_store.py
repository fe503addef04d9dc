"""The online store on Redis Cluster: :class:`~serving.redis_store.RedisStore`'s script and
write path with a cluster client and a hash-tagged key layout.

Redis Cluster runs a script only on keys of one hash slot. An entry key here is

    lte:<basis_version>:<encoder>:{<user_id>}

(the standalone layout with the user id in braces), so the slot is a function of the user
alone: every pair of one user lives on one node, and users spread over all 16384 slots. A
batch is grouped by slot (``CLUSTER KEYSLOT``'s CRC16, computed client-side) and each group
is one ``EVALSHA`` of the unchanged monotonic script, in chunks of
:data:`~serving.redis_store.CHUNK`; redis-py's cluster pipeline sends each node its calls in
one round trip. The comparison and the write stay one atomic step per key, so the rule
"no older LTE overwrites a newer one" holds across nodes, failovers and restarts.

The layout differs from standalone Redis's (the braces), so a standalone store is not read
through a cluster URL or the reverse; migrate by replaying ``lte-updates``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, cast

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.crc import key_slot

from serving.online_store import StoreKey
from serving.redis_store import CHUNK, RedisStore
from serving.store_format import ENTRY_PREFIX, PAIRS_KEY, pair_field
from serving.store_url import RedisClusterLocation


def cluster_entry_key(key: StoreKey) -> bytes:
    """The standalone key with the user id as the hash tag. Injective like it: the user id is
    still last and verbatim, only wrapped."""
    return cluster_user_key(pair_field(key.basis_version, key.encoder), key.user_id)


def cluster_user_key(pair: bytes, user_id: str) -> bytes:
    return ENTRY_PREFIX + pair + b":{" + user_id.encode() + b"}"


class RedisClusterStore(RedisStore):
    def __init__(self, location: RedisClusterLocation) -> None:
        client = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in location.nodes],
            username=location.username,
            password=location.password,
            ssl=location.tls,
            socket_timeout=location.socket_timeout,
            socket_connect_timeout=location.socket_timeout,
            max_connections=location.max_connections,
            # A node that restarts refuses connections for a moment; the refresher's backoff
            # covers longer outages (and the read API answers 503), so retry only briefly.
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.01), 1),
        )
        self._setup(location, client)

    def entry_key(self, key: StoreKey) -> bytes:
        return cluster_entry_key(key)

    def user_key(self, pair: bytes, user_id: str) -> bytes:
        return cluster_user_key(pair, user_id)

    def _script_groups(self, keys: list[bytes]) -> list[range | list[int]]:
        by_slot: defaultdict[int, list[int]] = defaultdict(list)
        for i, key in enumerate(keys):
            by_slot[key_slot(key)].append(i)
        return [
            group[start : start + CHUNK]
            for group in by_slot.values()
            for start in range(0, len(group), CHUNK)
        ]

    async def _send_writes(
        self,
        sha: str,
        groups: list[range | list[int]],
        keys: list[bytes],
        values: list[bytes],
        pairs: dict[bytes, str],
    ) -> list[Any]:
        """redis-py's cluster pipeline sends each node its calls in one round trip."""
        async with self._client.pipeline(transaction=False) as pipe:
            for group in groups:
                # execute_command: the cluster pipeline refuses .evalsha() by name even
                # when every key shares one slot.
                pipe.execute_command(
                    "EVALSHA",
                    sha,
                    len(group),
                    *[keys[i] for i in group],
                    *[values[i] for i in group],
                )
            pipe.hset(PAIRS_KEY, mapping=pairs)
            return cast(list[Any], await pipe.execute(raise_on_error=False))

    async def _mget(self, keys: list[bytes]) -> list[bytes | None]:
        # One MGET per slot, sent to the nodes in parallel (redis-py's non-atomic MGET).
        return cast(list[bytes | None], await self._client.mget_nonatomic(keys))
