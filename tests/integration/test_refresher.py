"""``lte refresher`` on the real embedded broker, real Redis and real RocksDB.

The oracle is always computed from the topic alone: per (basis_version, encoder, user), the
update with the largest (as_of, due_at), the later record on a tie."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import CollectorRegistry

from lte_core.update import LTEUpdate
from lte_runtime.embedded_broker import EmbeddedBroker
from lte_runtime.errors import TaskDiedError
from lte_runtime.kafka.batch_sender import OutRecord
from lte_runtime.kafka.settings import KafkaSettings
from lte_runtime.redis_server import RedisServer
from serving.online_store import StoreKey
from serving.refresher import Refresher
from serving.settings import RefresherSettings
from serving.store_url import RocksDBLocation
from tests.integration.harness import (
    ROOT,
    LteProcess,
    all_committed,
    committed_offsets,
    http_status,
    partition_ends,
    produce,
    read_topic,
    unique,
    wait_until,
)
from tests.integration.store_backends import (
    BACKENDS,
    location,
    mismatches,
    newest_per_key,
    records,
    same_update,
    sync_store,
    update_from_json,
    update_stream,
)

PARTITIONS = 4
SESSION_TIMEOUT_MS = "3000"


@dataclass
class Setup:
    broker: EmbeddedBroker
    tmp: Path
    name: str

    @property
    def topic(self) -> str:
        return f"lte-updates-{self.name}"

    @property
    def dlq(self) -> str:
        return f"lte-updates-dlq-{self.name}"

    @property
    def group(self) -> str:
        return f"refresher-{self.name}"

    def refresher(self, store: str, *extra: str, serve: bool = False) -> LteProcess:
        return LteProcess(
            [
                "refresher",
                "--broker",
                self.broker.bootstrap,
                "--store",
                store,
                "--updates-topic",
                self.topic,
                "--dlq-topic",
                self.dlq,
                "--group-id",
                self.group,
                "--session-timeout-ms",
                SESSION_TIMEOUT_MS,
                *(["--serve"] if serve else []),
                *extra,
            ],
            self.tmp,
            "refresher",
            port_flag="--port" if serve else "--metrics-port",
        )

    def in_process(self, tmp: Path, **overrides: Any) -> RefresherSettings:
        """Settings of a refresher run in this process over a RocksDB store under ``tmp``."""
        return RefresherSettings(
            kafka=KafkaSettings(bootstrap=self.broker.bootstrap),
            store=RocksDBLocation(tmp / "store"),
            topic=self.topic,
            dlq_topic=self.dlq,
            group_id=self.group,
            session_timeout_ms=6000,
            metrics_port=0,
            **overrides,
        )

    def create_topics(self) -> None:
        async def create() -> None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.broker.bootstrap)
            await admin.start()
            try:
                await admin.create_topics(
                    [NewTopic(t, PARTITIONS, 1) for t in (self.topic, self.dlq)]
                )
            finally:
                await admin.close()

        asyncio.run(create())

    def produce(self, out: list[OutRecord]) -> None:
        produce(self.broker.bootstrap, self.topic, out)

    def topic_state(self) -> tuple[dict[StoreKey, LTEUpdate], dict[int, int]]:
        """The oracle and each partition's end offset, from what the topic holds."""
        held = read_topic(self.broker.bootstrap, self.topic)
        return newest_per_key([(r.key, r.value) for r in held]), partition_ends(held)

    def committed(self) -> dict[int, int]:
        return committed_offsets(self.broker.bootstrap, self.group, self.topic, range(PARTITIONS))

    def all_committed(self, ends: dict[int, int]) -> bool:
        return all_committed(self.committed(), ends)


@pytest.fixture
def setup(broker: EmbeddedBroker, tmp_path: Path) -> Iterator[Setup]:
    s = Setup(broker, tmp_path, unique("r"))
    s.create_topics()
    started: list[LteProcess] = []
    original = s.refresher

    def tracked(store: str, *extra: str, serve: bool = False) -> LteProcess:
        process = original(store, *extra, serve=serve)
        started.append(process)
        return process

    s.refresher = tracked  # type: ignore[method-assign]
    yield s
    for process in started:
        process.kill()


def _read_through_api(port: int, keys: list[StoreKey]) -> list[dict[str, Any] | None]:
    async def fetch() -> list[dict[str, Any] | None]:
        out: list[dict[str, Any] | None] = []
        async with aiohttp.ClientSession() as session:
            for start in range(0, len(keys), 1000):
                chunk = keys[start : start + 1000]
                body = {
                    "user_ids": [k.user_id for k in chunk],
                    "basis_version": chunk[0].basis_version,
                    "encoder": chunk[0].encoder,
                }
                url = f"http://127.0.0.1:{port}/v1/lte:batchGet"
                async with session.post(url, data=orjson.dumps(body)) as resp:
                    assert resp.status == 200, await resp.text()
                    out.extend(orjson.loads(await resp.read())["results"])
        return out

    return asyncio.run(fetch())


@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_9_mid_stream_loses_no_update(
    setup: Setup, backend: str, redis_server: RedisServer
) -> None:
    rng = random.Random(f"kill-{backend}")
    basis = unique("basis")
    setup.produce(records(update_stream(rng, users=1500, count=15_000, d=16, basis_version=basis)))
    oracle, ends = setup.topic_state()
    store = redis_server.url if backend == "redis" else f"rocksdb://{setup.tmp / 'store'}"
    for kill in range(3):
        process = setup.refresher(store, "--batch-max-records", "40").start()
        process.wait_ready()
        threshold = rng.randint(300, 2_000)
        wait_until(
            lambda p=process, t=threshold: p.metric("lte_store_writes_total") >= t,  # type: ignore[misc]
            timeout=60,
            what="progress before the kill",
        )
        process.kill()
        assert not setup.all_committed(ends), f"the topic was done before kill {kill + 1}"
    final = setup.refresher(store, serve=backend == "rocksdb").start()
    final.wait_ready()
    wait_until(lambda: setup.all_committed(ends), timeout=60, what="every offset committed")
    keys = list(oracle)
    if backend == "redis":
        with sync_store(location(backend, redis_server, setup.tmp)) as opened:
            assert mismatches(opened, oracle) == []
    else:
        # The embedded default: the same process serves what it wrote.
        docs = _read_through_api(final.port, keys)
        bad = [
            k.user_id
            for k, doc in zip(keys, docs, strict=True)
            if doc is None or not same_update(update_from_json(doc), oracle[k])
        ]
        assert bad == []
    assert final.stop() == 0
    assert read_topic(setup.broker.bootstrap, setup.dlq) == []


def test_redis_outage_mid_stream_loses_nothing_and_recovers_alone(
    setup: Setup, tmp_path: Path
) -> None:
    server = RedisServer(tmp_path / "own-redis").start()
    try:
        rng = random.Random("outage")
        basis = unique("basis")
        setup.produce(
            records(update_stream(rng, users=1000, count=10_000, d=16, basis_version=basis))
        )
        oracle, ends = setup.topic_state()
        process = setup.refresher(
            server.url, "--batch-max-records", "40", "--retry-max-seconds", "0.3"
        ).start()
        process.wait_ready()
        wait_until(
            lambda: process.metric("lte_store_writes_total") >= 1000,
            timeout=60,
            what="progress before the outage",
        )
        server.kill()  # a crash: only what the append-only file holds survives
        wait_until(
            lambda: http_status(process.port, "/readyz") == 503,
            timeout=10,
            what="readiness to go false",
        )
        assert process.metric("lte_store_up") == 0
        committed = setup.committed()
        failed = {"outcome": "error"}
        errors = process.metric("lte_store_writes_total", failed)
        wait_until(
            lambda: process.metric("lte_store_writes_total", failed) >= errors + 3 * 40,
            timeout=10,
            what="retries during the outage",
        )
        assert setup.committed() == committed, "offsets moved while the store was down"
        assert not setup.all_committed(ends)
        server.start()
        wait_until(
            lambda: http_status(process.port, "/readyz") == 200,
            timeout=15,
            what="readiness to come back without a restart",
        )
        wait_until(lambda: setup.all_committed(ends), timeout=60, what="every offset committed")
        assert process.metric("lte_store_up") == 1
        with sync_store(location("redis", server, tmp_path)) as opened:
            assert mismatches(opened, oracle) == []
        assert process.stop() == 0
        assert process.log().count("retrying until it works") == 1
    finally:
        server.kill()


def _bad_records(rng: random.Random, good: LTEUpdate) -> list[tuple[OutRecord, str]]:
    """Broken records, each with the field the dead letter must name."""
    doc = orjson.loads(records([good])[0].value or b"")
    key = good.user_id.encode()

    def changed(**fields: Any) -> bytes:
        return orjson.dumps({**doc, **fields})

    cases = [
        (OutRecord(key, b"\xff{not json"), "value"),
        (OutRecord(key, None), "value"),
        (OutRecord(key, b"[1, 2]"), "value"),
        (OutRecord(key, changed(n_events=-1)), "n_events"),
        (OutRecord(key, changed(as_of="yesterday")), "as_of"),
        (OutRecord(key, changed(vector=None)), "vector"),
        (OutRecord(key, changed(coefficients=["x"])), "coefficients"),
        (OutRecord(key, changed(user_id="")), "user_id"),
        (OutRecord(b"someone-else", changed()), "key"),
        (OutRecord(None, changed()), "key"),
    ]
    rng.shuffle(cases)
    return cases


def test_bad_records_are_dead_lettered_and_metrics_add_up(setup: Setup, tmp_path: Path) -> None:
    rng = random.Random("bad")
    basis = unique("basis")
    good = update_stream(rng, users=200, count=2_000, d=8, basis_version=basis)
    bad = _bad_records(rng, good[0])
    mixed = [*records(good), *(record for record, _ in bad)]
    rng.shuffle(mixed)
    setup.produce(mixed)
    oracle, _ = setup.topic_state()

    registry = CollectorRegistry()
    settings = setup.in_process(tmp_path, batch_max_records=300, drift_reference_size=50)
    refresher = Refresher(settings, registry)

    def sample(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(refresher.run(stop))
        deadline = time.monotonic() + 60
        while _offered(registry, bad) < len(mixed):
            assert not task.done(), task
            assert time.monotonic() < deadline, "timed out waiting for every record"
            await asyncio.sleep(0.05)
        assert refresher.readiness()[0]
        stop.set()
        await task

    asyncio.run(scenario())

    dead = read_topic(setup.broker.bootstrap, setup.dlq)
    got = sorted((r.key or b"", r.value or b"") for r in dead)
    assert got == sorted((r.key or b"", r.value or b"") for r, _ in bad)
    for record in dead:
        headers = {k: v.decode() for k, v in record.headers}
        assert headers["lte.reason"] == "invalid_update"
        assert headers["lte.source.topic"] == setup.topic
        assert int(headers["lte.source.partition"]) in range(PARTITIONS)
        assert int(headers["lte.source.offset"]) >= 0
        field = headers["lte.detail"].split(":")[0]
        assert (record.key or b"", record.value or b"", field) in {
            (r.key or b"", r.value or b"", f) for r, f in bad
        }
    for field, n in Counter(f for _, f in bad).items():
        assert sample("lte_updates_invalid_total", field=field) == n

    written = sample("lte_store_writes_total", outcome="written")
    assert written >= len(oracle)
    assert sample("lte_staleness_seconds_count") == written
    assert 0 < sample("lte_drift_count") < written
    labels = {"basis_version": basis, "encoder": "mean"}
    non_empty = [u.vector for u in oracle.values() if u.vector is not None]
    assert sample("lte_population_users", **labels) == len(non_empty)
    assert 0.0 <= sample("lte_population_drift", **labels) <= 2.0
    assert registry.get_sample_value("lte_population_drift", labels) is not None
    for p in range(PARTITIONS):
        assert sample("lte_consumer_lag", component="refresher", partition=str(p)) == 0
    with sync_store(settings.store) as opened:
        assert mismatches(opened, oracle) == []


def _offered(registry: CollectorRegistry, bad: list[tuple[OutRecord, str]]) -> float:
    """Records the refresher has accounted for: store outcomes plus dead letters."""
    writes = sum(
        registry.get_sample_value("lte_store_writes_total", {"outcome": o}) or 0.0
        for o in ("written", "duplicate", "stale")
    )
    invalid = sum(
        registry.get_sample_value("lte_updates_invalid_total", {"field": f}) or 0.0
        for f in {f for _, f in bad}
    )
    return writes + invalid


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--store", "redis://h/0?sockettimeout=1"], "--store: unknown parameter(s) sockettimeout"),
        (["--dlq-topic", "lte-updates"], "--dlq-topic: must differ"),
        (["--drift-reference", str(ROOT / "pyproject.toml")], "--drift-reference: cannot read"),
    ],
)
def test_lte_refresher_refuses_bad_settings_with_one_line(args: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lte_cli", "refresher", "--broker", "127.0.0.1:1", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ),
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr


def test_a_failed_accounting_stops_the_refresher_and_commits_nothing_after_it(
    setup: Setup, tmp_path: Path
) -> None:
    """A batch's accounting and commit run after the next batch's write has started; an
    error there must still end the process (crash-only), not leave later batches written
    and never committed."""
    good = update_stream(random.Random("acct"), users=300, count=3_000, d=8, basis_version="b")
    setup.produce(records(good))
    settings = setup.in_process(tmp_path, batch_max_records=200)
    registry = CollectorRegistry()
    refresher = Refresher(settings, registry)
    accounted = refresher._account
    calls = 0

    def failing(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("accounting broke")
        accounted(*args, **kwargs)

    refresher._account = failing  # type: ignore[method-assign]

    async def scenario() -> None:
        task = asyncio.create_task(refresher.run(asyncio.Event()))
        with pytest.raises(TaskDiedError, match="accounting broke"):
            await asyncio.wait_for(task, 60)

    asyncio.run(scenario())
    assert calls == 2
    # batch 2's accounting failed while batch 3 was written; the loop stops at the latest
    # when batch 4's write returns, not after writing the other ~10 batches
    writes = registry.get_sample_value("lte_store_write_duration_seconds_count")
    assert writes is not None and writes <= 4
    assert sum(setup.committed().values()) < len(good)
