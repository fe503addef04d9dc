"""``--store`` URLs: which backend, where, and with which connection settings.

* ``redis://[user:password@]host[:port][/db][?socket_timeout=S&max_connections=N]``
  (``rediss://`` for TLS). Anything else in the query is refused by name: a misspelt
  parameter silently ignored would leave the operator believing it applies.
* ``rocksdb:///absolute/path`` or ``rocksdb://relative/path``: the embedded store, a RocksDB
  directory on this machine. No parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from serving.errors import StoreURLError
from serving.online_store import OnlineStore

_REDIS_PARAMS = ("socket_timeout", "max_connections")


@dataclass(frozen=True, slots=True)
class RedisLocation:
    host: str
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    socket_timeout: float = 5.0
    max_connections: int = 64

    def describe(self) -> str:
        auth = f"{self.username or ''}:***@" if self.password else ""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{auth}{self.host}:{self.port}/{self.db}"


@dataclass(frozen=True, slots=True)
class RocksDBLocation:
    path: Path

    def describe(self) -> str:
        return f"rocksdb://{self.path}"


StoreLocation = RedisLocation | RocksDBLocation


def parse_store_url(text: str, *, flag: str = "--store") -> StoreLocation:
    if text.startswith("rocksdb://"):
        return _rocksdb(text, flag)
    if text.startswith(("redis://", "rediss://")):
        return _redis(text, flag)
    raise StoreURLError(
        f"{flag}: expected redis://host:port/db, rediss://… or rocksdb:///path; got "
        f"{_masked(text)!r}"
    )


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
    try:
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise StoreURLError(f"{flag}: malformed query string {parts.query!r}") from exc
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
    return RedisLocation(
        host=parts.hostname,
        port=port,
        db=int(db_text),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=parts.scheme == "rediss",
        socket_timeout=socket_timeout,
        max_connections=int(connections),
    )


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
    from serving.rocksdb_store import RocksDBStore  # noqa: PLC0415

    return RocksDBStore(location.path, writer=writer)
