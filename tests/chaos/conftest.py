"""Chaos scenarios (issue 17): the whole pipeline — ``lte worker`` → ``lte-updates`` →
``lte refresher`` → Redis — as real processes on the embedded broker, under faults. Every
scenario ends with the online store equal to a from-scratch oracle for every user."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lte_runtime.embedded_broker import EmbeddedBroker


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "chaos: faults against the whole pipeline as real processes (tests/chaos)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/chaos" in str(item.fspath):
            item.add_marker(pytest.mark.chaos)


@pytest.fixture(scope="session")
def chaos_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("chaos-broker") / "tansu.log"
    with EmbeddedBroker(log_path=log) as running:
        yield running
