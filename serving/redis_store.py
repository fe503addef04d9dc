"""The online store on Redis (redis-py asyncio).

A batch is a few ``EVALSHA`` calls of one Lua script, pipelined in a single round trip. The
script compares order keys and writes inside Redis, so the monotonic rule holds with any
number of refreshers and no read-then-write race; it returns each replaced value so the
refresher computes drift without reading again. Chunks of :data:`CHUNK` entries bound how
long one script blocks Redis (about a millisecond) while a batch of thousands still costs one
round trip. The client and the key layout are hooks: :mod:`serving.redis_cluster_store`
runs the same script per hash slot on Redis Cluster.

Reads (:meth:`RedisStore.get_many_raw`, the read API's path) and a batch's writes send their
commands, packed here, on connections of their own, taken from a small free list, instead of
through the client and its blocking pool: the client's per-command machinery costs ~3x the CPU
of the round trip itself (measured: ~210 µs against ~75 µs per ``GET`` on the loaded 2-core
machine), and a read API at 10 clients spends most of a request there; its pipeline packs a
d=384 batch at ~10 µs per entry against ~3 µs here. A connection that fails, or whose read is
cancelled (the API's read timeout), is dropped; an exchange on a reused connection that finds
it closed (Redis restarted) is sent once more on a new one, as the pool's retry does (reads
and the idempotent writes are safe to repeat). Redis Cluster keeps redis-py's cluster
pipeline, which routes each call to its node.

Durability is Redis's: with ``appendonly yes`` and ``appendfsync always`` an acknowledged
batch survives a Redis crash; with ``everysec`` up to a second of writes can be lost and
would only be restored by replaying ``lte-updates``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError

from lte_core.update_columns import UpdateColumns
from serving.errors import StoreUnavailableError
from serving.online_store import (
    BatchWrite,
    OnlineStore,
    StoredLTE,
    StoreKey,
    VersionPair,
)
from serving.store_format import (
    FORMAT_VERSION,
    HEADER,
    ORDER_KEY_OFFSET,
    PAIRS_KEY,
    SHARED_FORMAT,
    UNVERSIONED_FORMAT,
    VERSION_OFFSET,
    VERSIONED_HEADER,
    decode_found,
    encode_entries,
    entry_key,
    entry_keys,
    pair_field,
    parse_pair_field,
    user_key,
)
from serving.store_url import RedisClusterLocation, RedisLocation

CHUNK = 256

# KEYS[i] = entry key, ARGV[i] = encoded entry. Each entry is written with SET ... GET
# (Redis >= 6.2), which returns the value it replaced, and a stale one (older than the
# stored entry) puts that value back: one Redis call per entry instead of a GET and a SET
# in the usual case, where updates arrive in order. Returns, per entry, an outcome code
# (0 written, 1 duplicate, 2 stale) and the value it replaced ('' when none). A value that is
# not an entry of this format (too short, other version byte) is overwritten like no entry.
# order() is LTEUpdate.order_key read from the bytes (serving.store_format): formats 2 and 3
# by their version, format 1 by (as_of, due_at), every format 2/3 entry newer than any
# format 1 one.
WRITE_SCRIPT = f"""
local function order(v)
  local fmt = string.byte(v, 1)
  local versioned = fmt == {FORMAT_VERSION} or fmt == {SHARED_FORMAT}
  if versioned and string.len(v) >= {VERSIONED_HEADER.size} then
    local a, b = struct.unpack('<dd', v, {VERSION_OFFSET + 1})
    return 1, a, b
  elseif fmt == {UNVERSIONED_FORMAT} and string.len(v) >= {HEADER.size} then
    local a, b = struct.unpack('<dd', v, {ORDER_KEY_OFFSET + 1})
    return 0, a, b
  end
  return nil, nil, nil
end
local out = {{}}
for i = 1, #KEYS do
  local new = ARGV[i]
  local old = redis.call('SET', KEYS[i], new, 'GET')
  local code = 0
  if old then
    local ok, oa, ob = order(old)
    if ok then
      local nk, na, nb = order(new)
      if nk < ok or (nk == ok and (na < oa or (na == oa and nb < ob))) then
        code = 2
        redis.call('SET', KEYS[i], old)
      elseif nk == ok and na == oa and nb == ob then
        code = 1
      end
    end
  end
  out[2 * i - 1] = code
  out[2 * i] = (code ~= 2 and old) or ''
end
return out
"""


class RedisStore(OnlineStore):
    def __init__(self, location: RedisLocation) -> None:
        self._setup(location, _connect(location))

    def _setup(self, location: RedisLocation | RedisClusterLocation, client: Any) -> None:
        self._location = location
        self._client = client
        self._sha: str | None = None
        self._connections: _Connections | None = None
        if isinstance(location, RedisLocation):
            self._connections = _Connections(client.connection_pool, location.max_connections)

    def entry_key(self, key: StoreKey) -> bytes:
        """Where ``key``'s entry lives (the cluster layout adds a hash tag)."""
        return entry_key(key)

    def user_key(self, pair: bytes, user_id: str) -> bytes:
        """:meth:`entry_key` from a pair's field (:func:`~serving.store_format.pair_field`)."""
        return user_key(pair, user_id)

    def _script_groups(self, keys: list[bytes]) -> list[range | list[int]]:
        """Indices of ``keys`` that one script call may take together."""
        return [range(start, min(start + CHUNK, len(keys))) for start in range(0, len(keys), CHUNK)]

    async def _mget(self, keys: list[bytes]) -> list[bytes | None]:
        if self._connections is not None:
            commands: list[bytes] = []
            _packed(commands, [b"MGET", *keys])
            (found,) = await self._connections.ask(commands, 1)
            if isinstance(found, Exception):
                raise found
            return cast(list[bytes | None], found)
        return cast(list[bytes | None], await self._client.mget(keys))

    def describe(self) -> str:
        return self._location.describe()

    async def write_batch(self, updates: UpdateColumns, *, stored_at: float) -> BatchWrite:
        if not len(updates):
            return BatchWrite.empty()
        raw_keys = entry_keys(updates, layout=self.user_key)
        values = encode_entries(updates, stored_at)
        _, pairs = updates.pair_codes()
        fields = {pair_field(b, e): repr(stored_at) for b, e in pairs}
        try:
            replies = await self._run_script(raw_keys, values, fields)
        except RedisError as exc:
            raise self._unavailable(exc) from exc
        return BatchWrite(
            np.array(replies[0::2], dtype=np.int8), [old or None for old in replies[1::2]]
        )

    async def _run_script(
        self, keys: list[bytes], values: list[bytes], pairs: dict[bytes, str]
    ) -> list[Any]:
        if self._sha is None:
            self._sha = await self._client.script_load(WRITE_SCRIPT)
        groups = self._script_groups(keys)
        for _ in range(2):
            replies = await self._send_writes(self._sha, groups, keys, values, pairs)
            if not any(isinstance(r, NoScriptError) for r in replies):
                break
            # Redis restarted (or SCRIPT FLUSH) since the script was loaded.
            self._sha = await self._client.script_load(WRITE_SCRIPT)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        out: list[Any] = [None] * (2 * len(keys))
        for group, reply in zip(groups, replies[:-1], strict=True):
            if isinstance(group, range):  # standalone: consecutive rows
                out[2 * group.start : 2 * group.stop] = reply
                continue
            for j, i in enumerate(group):
                out[2 * i : 2 * i + 2] = reply[2 * j : 2 * j + 2]
        return out

    async def _send_writes(
        self,
        sha: str,
        groups: list[range | list[int]],
        keys: list[bytes],
        values: list[bytes],
        pairs: dict[bytes, str],
    ) -> list[Any]:
        """One ``EVALSHA`` per group and the ``HSET`` of the pairs, in one round trip; the
        replies in that order, an error reply as its exception.

        Packed here in one pass (:func:`_packed`) and sent on a connection of
        :class:`_Connections`: redis-py's pipeline packs each argument of a few kB by
        concatenating it into a growing buffer, ~10 µs of CPU per d=384 entry against ~3 µs
        here (measured on the loaded 2-core machine)."""
        assert self._connections is not None
        script = sha.encode()
        commands: list[bytes] = []
        for group in groups:
            _packed(
                commands,
                [
                    b"EVALSHA",
                    script,
                    b"%d" % len(group),
                    *[keys[i] for i in group],
                    *[values[i] for i in group],
                ],
            )
        fields = [part for name, when in pairs.items() for part in (name, when.encode())]
        _packed(commands, [b"HSET", PAIRS_KEY, *fields])
        return await self._connections.ask(commands, len(groups) + 1)

    async def get_many(self, keys: Sequence[StoreKey]) -> list[StoredLTE | None]:
        return decode_found(keys, await self.get_many_raw(keys))

    async def get_many_raw(self, keys: Sequence[StoreKey]) -> list[bytes | None]:
        if not keys:
            return []
        try:
            return await self._mget([self.entry_key(k) for k in keys])
        except RedisError as exc:
            raise self._unavailable(exc) from exc

    async def versions(self) -> list[VersionPair]:
        try:
            fields = cast(dict[bytes, bytes], await self._client.hgetall(PAIRS_KEY))
        except RedisError as exc:
            raise self._unavailable(exc) from exc
        return [VersionPair(*parse_pair_field(name), float(when)) for name, when in fields.items()]

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except RedisError as exc:
            raise self._unavailable(exc) from exc

    async def close(self) -> None:
        if self._connections is not None:
            await self._connections.close()
        await self._client.aclose()

    def _unavailable(self, exc: RedisError) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"Redis at {self.describe()}: {type(exc).__name__}: {exc}. Check that Redis is up "
            "and reachable; updates are retried, none is dropped."
        )


class _Connections:
    """Connections made like the client's (same host, TLS, credentials, timeouts), each
    used by one exchange (reads' ``MGET``, a batch's writes) at a time; at most ``limit``
    of them, beyond which an exchange waits for a free one."""

    def __init__(self, pool: Any, limit: int) -> None:
        self._pool = pool
        self._free: list[Connection] = []
        self._slots = asyncio.Semaphore(limit)

    async def ask(self, commands: list[bytes], replies: int) -> list[Any]:
        """Send ``commands`` (RESP, :func:`_packed`) and read their ``replies`` replies,
        an error reply as its exception (it leaves the stream in step). Whatever is sent
        must be safe to send twice: a reused connection found closed (Redis restarted)
        is replaced and the exchange sent once more, as the pool's retry does."""
        async with self._slots:
            reused = bool(self._free)
            connection = self._free.pop() if reused else self._pool.make_connection()
            try:
                found = await self._exchange(connection, commands, replies)
            except (ConnectionError, OSError, RedisConnectionError) as exc:
                await connection.disconnect(nowait=True)
                if not reused:
                    raise _as_redis_error(exc) from exc
                connection = self._pool.make_connection()  # Redis restarted: once more
                try:
                    found = await self._exchange(connection, commands, replies)
                except BaseException as again:
                    await connection.disconnect(nowait=True)
                    if isinstance(again, ConnectionError | OSError):
                        raise _as_redis_error(again) from again
                    raise
            except BaseException:
                # a timeout or a cancelled read leaves the stream unusable
                await connection.disconnect(nowait=True)
                raise
            self._free.append(connection)
            return found

    @staticmethod
    async def _exchange(connection: Connection, commands: list[bytes], replies: int) -> list[Any]:
        await connection.send_packed_command(commands)
        out: list[Any] = []
        for _ in range(replies):
            try:
                out.append(await connection.read_response())
            except ResponseError as exc:
                out.append(exc)
        return out

    async def close(self) -> None:
        free, self._free = self._free, []
        for connection in free:
            await connection.disconnect(nowait=True)


def _packed(out: list[bytes], args: list[bytes]) -> None:
    """Append one command to ``out`` in RESP, each argument as it is (no copy: the
    transport joins the pieces once)."""
    out.append(b"*%d\r\n" % len(args))
    for arg in args:
        out.append(b"$%d\r\n" % len(arg))
        out.append(arg)
        out.append(b"\r\n")


def _as_redis_error(exc: BaseException) -> RedisError:
    return exc if isinstance(exc, RedisError) else RedisConnectionError(str(exc))


def _connect(location: RedisLocation) -> Redis:
    pool = BlockingConnectionPool(
        max_connections=location.max_connections,
        timeout=location.socket_timeout,
        connection_class=SSLConnection if location.tls else Connection,
        host=location.host,
        port=location.port,
        db=location.db,
        username=location.username,
        password=location.password,
        socket_timeout=location.socket_timeout,
        socket_connect_timeout=location.socket_timeout,
        # One quick reconnect hides a pooled connection that died with a Redis restart;
        # longer outages are the caller's to handle (the refresher's backoff, a 503).
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.01), 1),
    )
    return Redis(connection_pool=pool)
