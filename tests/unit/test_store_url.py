from __future__ import annotations

from pathlib import Path

import pytest

from lte_core.errors import ConfigError
from serving.errors import StoreURLError
from serving.store_url import (
    FeastLocation,
    RedisClusterLocation,
    RedisLocation,
    RocksDBLocation,
    parse_store_url,
)


def test_redis_urls() -> None:
    assert parse_store_url("redis://cache:6380/2") == RedisLocation("cache", 6380, 2)
    assert parse_store_url("redis://cache") == RedisLocation("cache", 6379, 0)
    loc = parse_store_url("rediss://lte:p%40ss@cache:6390/1?socket_timeout=0.5&max_connections=8")
    assert loc == RedisLocation(
        "cache",
        6390,
        1,
        username="lte",
        password="p@ss",  # noqa: S106
        tls=True,
        socket_timeout=0.5,
        max_connections=8,
    )


def test_the_password_never_shows() -> None:
    loc = parse_store_url("redis://user:hunter2@cache:6379/0")
    assert isinstance(loc, RedisLocation)
    assert "hunter2" not in loc.describe() and "hunter2" not in repr(loc)
    assert loc.describe() == "redis://user:***@cache:6379/0"
    with pytest.raises(StoreURLError) as caught:
        parse_store_url("memcached://user:hunter2@cache:1")
    assert "hunter2" not in str(caught.value)


def test_rocksdb_urls() -> None:
    assert parse_store_url("rocksdb:///var/lib/lte") == RocksDBLocation(Path("/var/lib/lte"))
    assert parse_store_url("rocksdb://var/store") == RocksDBLocation(Path("var/store"))


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://cache/0?timeout=3&pool=2", "unknown parameter(s) pool, timeout"),
        ("redis://cache/zero", "database number"),
        ("redis://cache:notaport/0", "--store"),
        ("redis:///0", "missing host"),
        ("redis://cache/0?socket_timeout=-1", "socket_timeout"),
        ("redis://cache/0?socket_timeout=inf", "socket_timeout"),
        ("redis://cache/0?max_connections=0", "max_connections"),
        ("redis://cache/0?max_connections=1&max_connections=2", "given 2 times"),
        ("rocksdb:///var/store?sync=1", "no parameters"),
        ("rocksdb://", "store directory"),
        ("/var/store", "expected redis://"),
    ],
)
def test_bad_urls_name_the_problem(url: str, message: str) -> None:
    with pytest.raises(StoreURLError, match=r"^--store: ") as caught:
        parse_store_url(url)
    assert message in str(caught.value)
    assert isinstance(caught.value, ConfigError)


def test_redis_cluster_urls() -> None:
    loc = parse_store_url("redis+cluster://a:7000,b:7001,[::1]:7002")
    assert loc == RedisClusterLocation((("a", 7000), ("b", 7001), ("::1", 7002)))
    loc = parse_store_url("rediss+cluster://lte:p%40ss@a,b:7001/0?socket_timeout=0.5")
    assert loc == RedisClusterLocation(
        (("a", 6379), ("b", 7001)),
        username="lte",
        password="p@ss",  # noqa: S106
        tls=True,
        socket_timeout=0.5,
    )
    assert "p@ss" not in repr(loc) and "p@ss" not in loc.describe()
    assert loc.describe() == "rediss+cluster://lte:***@a:6379,b:7001"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster://a:7000/1", "only database 0"),
        ("redis+cluster://", "at least one host:port"),
        ("redis+cluster://a:7000,:7001", "missing host"),
        ("redis+cluster://a:notaport", "bad cluster node"),
        ("redis+cluster://a:7000?pool=3", "unknown parameter(s) pool"),
        ("feast://", "Feast repository directory"),
        ("feast://repo?x=1", "no parameters"),
    ],
)
def test_bad_cluster_and_feast_urls_name_the_problem(url: str, message: str) -> None:
    with pytest.raises(StoreURLError, match=r"^--store: ") as caught:
        parse_store_url(url)
    assert message in str(caught.value)


def test_feast_urls() -> None:
    assert parse_store_url("feast:///srv/repo") == FeastLocation(Path("/srv/repo"))
    assert parse_store_url("feast://repo") == FeastLocation(Path("repo"))
