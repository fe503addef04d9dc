"""Fixtures that start real servers: the embedded Kafka broker (Tansu), Redis and, per test,
``lte`` processes. Topics and consumer groups are unique per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lte_core.basis import BasisArtifact
from lte_runtime.embedded_broker import EmbeddedBroker
from lte_runtime.redis_cluster import LocalRedisCluster
from lte_runtime.redis_server import RedisServer
from offline.datasets import MovieLens, load_movielens


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_path=log) as running:
        yield running


@pytest.fixture(scope="session")
def movielens(ml100k: Path) -> MovieLens:
    return load_movielens(ml100k)


@pytest.fixture(scope="session")
def ml_basis_dir(movielens: MovieLens, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return movielens.basis().save(tmp_path_factory.mktemp("basis") / "ml100k")


@pytest.fixture(scope="session")
def ml_basis(ml_basis_dir: Path) -> BasisArtifact:
    return BasisArtifact.load(ml_basis_dir)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session; tests keep apart by unique basis versions."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as running:
        yield running


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    """One real 3-node Redis Cluster on loopback for the session (started on first use)."""
    with LocalRedisCluster(tmp_path_factory.mktemp("redis-cluster")) as running:
        yield running
