"""``--store`` URLs: which backend, where, and with which connection settings.

* ``redis://[user:password@]host[:port][/db][?socket_timeout=S&max_connections=N]``
  (``rediss://`` for TLS). Anything else in the query is refused by name: a misspelt
  parameter silently ignored would leave the operator believing it applies.
* ``redis+cluster://[user:password@]host:port[,host:port...][?socket_timeout=S&max_connections=N]``
  (``rediss+cluster://`` for TLS): a Redis Cluster, reached through any of the given nodes
  (redis-py's ``RedisCluster`` discovers the rest). Database 0 only, as Redis Cluster has no
  other. ``max_connections`` is per node.
* ``feast://path/to/repo``: push to the online store of a Feast feature repository written by
  ``lte feast-repo`` (the ``lte-stream[feast]`` extra); see ``serving/feast_store.py``.
* ``rocksdb:///absolute/path`` or ``rocksdb://relative/path``: the embedded store, a RocksDB
  directory on this machine. No parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from serving.errors import StoreOpenError, StoreURLError
from serving.online_store import OnlineStore

_REDIS_PARAMS = ("socket_timeout", "max_connections")


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisConnection:
    """How to connect to Redis, whether one server or a cluster: the query parameters and
    credentials both URL forms share. The password never appears in a repr or a log."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    socket_timeout: float = 5.0
    max_connections: int = 64

    def _described(self, kind: str, where: str) -> str:
        """The URL with the password masked; ``kind`` is what follows ``redis``/``rediss``."""
        auth = f"{self.username or ''}:***@" if self.password else ""
        return f"redis{'s' if self.tls else ''}{kind}://{auth}{where}"


@dataclass(frozen=True, slots=True)
class RedisLocation(RedisConnection):
    host: str
    port: int = 6379
    db: int = 0

    def describe(self) -> str:
        return self._described("", f"{self.host}:{self.port}/{self.db}")


@dataclass(frozen=True, slots=True)
class RocksDBLocation:
    path: Path

    def describe(self) -> str:
        return f"rocksdb://{self.path}"


@dataclass(frozen=True, slots=True)
class RedisClusterLocation(RedisConnection):
    nodes: tuple[tuple[str, int], ...]

    def describe(self) -> str:
        return self._described("+cluster", ",".join(f"{h}:{p}" for h, p in self.nodes))


@dataclass(frozen=True, slots=True)
class FeastLocation:
    repo: Path

    def describe(self) -> str:
        return f"feast://{self.repo}"


StoreLocation = RedisLocation | RedisClusterLocation | RocksDBLocation | FeastLocation


def parse_store_url(text: str, *, flag: str = "--store") -> StoreLocation:
    if text.startswith("rocksdb://"):
        return _rocksdb(text, flag)
    if text.startswith(("redis://", "rediss://")):
        return _redis(text, flag)
    if text.startswith(("redis+cluster://", "rediss+cluster://")):
        return _redis_cluster(text, flag)
    if text.startswith("feast://"):
        return _feast(text, flag)
    raise StoreURLError(
        f"{flag}: expected redis://host:port/db, rediss://…, redis+cluster://host:port,…, "
        f"feast://repo or rocksdb:///path; got {_masked(text)!r}"
    )


def _feast(text: str, flag: str) -> FeastLocation:
    rest = text[len("feast://") :]
    if "?" in rest or "#" in rest:
        raise StoreURLError(f"{flag}: feast URLs take no parameters; got {text!r}")
    if not rest:
        raise StoreURLError(f"{flag}: give the Feast repository directory, e.g. feast:///srv/repo")
    return FeastLocation(Path(unquote(rest)))


def _rocksdb(text: str, flag: str) -> RocksDBLocation:
    rest = text[len("rocksdb://") :]
    if "?" in rest or "#" in rest:
        raise StoreURLError(f"{flag}: rocksdb URLs take no parameters; got {text!r}")
    if not rest:
        raise StoreURLError(f"{flag}: give the store directory, e.g. rocksdb:///var/lib/lte")
    return RocksDBLocation(Path(unquote(rest)))


def _redis(text: str, flag: str) -> RedisLocation:
    try:
        parts = urlsplit(text)
        port = parts.port or 6379
    except ValueError as exc:
        raise StoreURLError(f"{flag}: {exc} in {_masked(text)!r}") from exc
    if not parts.hostname:
        raise StoreURLError(f"{flag}: missing host in {_masked(text)!r}")
    db_text = parts.path.strip("/") or "0"
    if not db_text.isdigit():
        raise StoreURLError(f"{flag}: the path must be a database number, got /{db_text}")
    socket_timeout, max_connections = _connection_params(parts.query, flag)
    return RedisLocation(
        host=parts.hostname,
        port=port,
        db=int(db_text),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=parts.scheme == "rediss",
        socket_timeout=socket_timeout,
        max_connections=max_connections,
    )


def _redis_cluster(text: str, flag: str) -> RedisClusterLocation:
    """Several ``host:port`` in the authority, which ``urlsplit`` cannot read as one host:
    the user info is split off at the last ``@`` and the nodes at commas."""
    scheme, _, rest = text.partition("://")
    rest, _, query = rest.partition("?")
    authority, _, path = rest.partition("/")
    if path.strip("/") not in ("", "0"):
        raise StoreURLError(f"{flag}: Redis Cluster has only database 0, got /{path.strip('/')}")
    userinfo, at, hosts = authority.rpartition("@")
    username = password = None
    if at:
        user, _, secret = userinfo.partition(":")
        username, password = unquote(user) or None, unquote(secret) or None
    nodes = tuple(_node(part, flag) for part in hosts.split(",")) if hosts else ()
    if not nodes:
        raise StoreURLError(f"{flag}: give at least one host:port of the cluster")
    socket_timeout, max_connections = _connection_params(query, flag)
    return RedisClusterLocation(
        nodes=nodes,
        username=username,
        password=password,
        tls=scheme == "rediss+cluster",
        socket_timeout=socket_timeout,
        max_connections=max_connections,
    )


def _node(text: str, flag: str) -> tuple[str, int]:
    try:
        parts = urlsplit(f"//{text}")
        port = parts.port or 6379
    except ValueError as exc:
        raise StoreURLError(f"{flag}: bad cluster node {text!r}: {exc}") from exc
    if not parts.hostname:
        raise StoreURLError(f"{flag}: missing host in cluster node {text!r}")
    return parts.hostname, port


def _connection_params(query_text: str, flag: str) -> tuple[float, int]:
    """``socket_timeout`` and ``max_connections`` from a query string; anything else is
    refused by name."""
    try:
        query = parse_qs(query_text, keep_blank_values=True, strict_parsing=bool(query_text))
    except ValueError as exc:
        raise StoreURLError(f"{flag}: malformed query string {query_text!r}") from exc
    unknown = sorted(set(query) - set(_REDIS_PARAMS))
    if unknown:
        raise StoreURLError(
            f"{flag}: unknown parameter(s) {', '.join(unknown)}; "
            f"supported: {', '.join(_REDIS_PARAMS)}"
        )
    timeout = _single(query, "socket_timeout", flag, "5")
    connections = _single(query, "max_connections", flag, "64")
    try:
        socket_timeout = float(timeout)
    except ValueError:
        socket_timeout = math.nan
    if not socket_timeout > 0 or math.isinf(socket_timeout):
        raise StoreURLError(f"{flag}: socket_timeout must be a positive number of seconds")
    if not connections.isdigit() or int(connections) < 1:
        raise StoreURLError(f"{flag}: max_connections must be a positive integer")
    return socket_timeout, int(connections)


def _single(query: dict[str, list[str]], name: str, flag: str, default: str) -> str:
    values = query.get(name, [default])
    if len(values) != 1:
        raise StoreURLError(f"{flag}: {name} given {len(values)} times")
    return values[0]


def _masked(text: str) -> str:
    """The URL with any password replaced, for error messages."""
    try:
        parts = urlsplit(text)
        password = parts.password
    except ValueError:
        return "<unparsable URL>"
    return text.replace(f":{password}@", ":***@") if password else text


def open_store(location: StoreLocation, *, writer: bool) -> OnlineStore:
    """Open the backend ``location`` names. With RocksDB only one process may write; other
    processes (``lte serve`` on its own) open a read-only follower of the writer's files."""
    if isinstance(location, RedisLocation):
        from serving.redis_store import RedisStore  # noqa: PLC0415 - backends load on demand

        return RedisStore(location)
    if isinstance(location, RedisClusterLocation):
        from serving.redis_cluster_store import RedisClusterStore  # noqa: PLC0415

        return RedisClusterStore(location)
    if isinstance(location, FeastLocation):
        try:
            from serving.feast_store import FeastStore  # noqa: PLC0415 - the optional extra
        except ImportError as exc:
            raise StoreOpenError(
                f"{location.describe()}: the Feast sink needs the Feast extra "
                f"(pip install 'lte-stream[feast]'): {exc}"
            ) from exc
        return FeastStore(location)
    from serving.rocksdb_store import RocksDBStore  # noqa: PLC0415

    return RocksDBStore(location.path, writer=writer)
