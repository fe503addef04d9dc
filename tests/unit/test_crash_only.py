"""Crash-only supervision (lte_runtime/crash_only.py) and ``/healthz`` following it."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from lte_core.errors import ConfigError
from lte_runtime.crash_only import Heartbeat, supervised
from lte_runtime.errors import TaskDiedError
from lte_runtime.status_server import StatusServer


async def _boom() -> None:
    raise KeyError("partition 3")


async def _deliberate() -> None:
    raise ConfigError("--store: bad URL")


async def _fine() -> int:
    return 7


def test_an_unexpected_error_stops_with_one_line_naming_the_task() -> None:
    with pytest.raises(TaskDiedError) as err:
        asyncio.run(supervised("the sweeper", _boom()))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("the sweeper stopped: KeyError: 'partition 3'")


def test_deliberate_errors_and_results_pass_through() -> None:
    with pytest.raises(ConfigError, match="--store"):
        asyncio.run(supervised("x", _deliberate()))
    assert asyncio.run(supervised("x", _fine())) == 7


def test_a_heartbeat_goes_stale_after_its_limit() -> None:
    beat = Heartbeat("the loop", limit=0.05)
    assert beat.liveness()[0]
    deadline = time.monotonic() + 5
    while beat.liveness()[0] and time.monotonic() < deadline:
        time.sleep(0.01)
    ok, reason = beat.liveness()
    assert not ok and "the loop made no progress" in reason
    beat.beat()
    assert beat.liveness()[0]


def test_healthz_fails_when_a_task_is_dead() -> None:
    state = {"alive": True}

    async def scenario() -> list[int]:
        server = StatusServer(
            CollectorRegistry(),
            lambda: (True, "ready"),
            host="127.0.0.1",
            port=0,
            alive=lambda: (state["alive"], "the loop"),
        )
        await server.start()
        statuses = []
        try:
            async with aiohttp.ClientSession() as session:
                for alive in (True, False):
                    state["alive"] = alive
                    url = f"http://127.0.0.1:{server.port}/healthz"
                    async with session.get(url) as resp:
                        statuses.append(resp.status)
        finally:
            await server.stop()
        return statuses

    assert asyncio.run(scenario()) == [200, 503]
