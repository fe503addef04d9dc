"""Names and connection strings of the Feast integration (pure; no Feast needed)."""

from __future__ import annotations

import pytest

from serving.feast_repo import (
    FeastRepoError,
    ViewNames,
    feast_connection_string,
    ledger_location,
)
from serving.store_url import RedisClusterLocation, RedisLocation


def test_view_names_are_distinct_per_pair_even_when_slugs_collide() -> None:
    plain = ViewNames.of("0123abcd", "mean")
    assert plain.view == "lte_0123abcd_mean"
    assert plain.push_source == "lte_0123abcd_mean_push"
    pairs = [("b", "recency:30d"), ("b", "recency_30d"), ("b", "recency/30d"), ("c", "mean")]
    views = {ViewNames.of(*pair).view for pair in pairs}
    assert len(views) == len(pairs)
    assert all(v.replace("_", "").isalnum() for v in views)


def test_feast_connection_strings() -> None:
    assert feast_connection_string("redis://cache:6380/2") == ("redis", "cache:6380,db=2")
    assert feast_connection_string("rediss://cache/0") == ("redis", "cache:6379,db=0,ssl=true")
    assert feast_connection_string("redis+cluster://a:7000,b:7001") == (
        "redis_cluster",
        "a:7000,b:7001",
    )
    with pytest.raises(FeastRepoError, match="no password"):
        feast_connection_string("redis://u:secret@cache/0")
    with pytest.raises(FeastRepoError, match="redis://"):
        feast_connection_string("rocksdb:///x")


def test_the_ledger_is_the_redis_feast_writes_to() -> None:
    assert ledger_location("redis", "cache:6380,db=2") == RedisLocation("cache", 6380, 2)
    assert ledger_location("redis", "cache:6380,db=2,password=pw,ssl=true") == RedisLocation(
        "cache",
        6380,
        2,
        password="pw",  # noqa: S106
        tls=True,
    )
    assert ledger_location("redis_cluster", "a:7000,b:7001") == RedisClusterLocation(
        (("a", 7000), ("b", 7001))
    )
    with pytest.raises(FeastRepoError, match="redis_sentinel"):
        ledger_location("redis_sentinel", "a:26379")
