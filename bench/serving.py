"""Benchmark of the serving layer, both backends in one run: refresher writes/s and read-API
latency under load.

* ``refresher``: ``--updates`` LTE updates (d = ``--d`` float32, K = d as with the identity
  basis) for ``--users`` users on the embedded broker, consumed by an in-process
  :class:`serving.refresher.Refresher` with its default batch size, from the moment it has
  joined its group until every record is accounted for. Kafka fetch, JSON decode, the store
  write and the offset commit are all inside the figure.
* ``store``: the same updates through ``OnlineStore.write_batch`` alone (batches of 5,000),
  the ceiling the refresher can approach. ``store_time_share`` is the part of the
  refresher's wall time spent in store writes; ``topic_MB_s`` the rate it read the topic at
  (with d = 384 an update is ~8 KB of JSON, and the embedded broker's fetch bandwidth, not
  the store, is then the bound).
* ``GET``: ``lte serve`` as its own process over the store the refresher filled;
  ``--concurrency`` aiohttp clients (one keep-alive connection each) ask for random users for
  ``--duration`` seconds after a 1 s warm-up; p50/p99 of the per-request latency seen by
  the client.
  With a closed loop, p50 is about concurrency / throughput: at 200 clients it measures
  queueing on a saturated machine; the same route at concurrency 10 shows the latency of
  one request when the server is not saturated.
* ``batchGet``: the same with 100 users per request at concurrency 20.

Redis runs with ``appendonly yes`` and ``appendfsync always`` (every acknowledged write on
disk, what the outage test relies on) unless ``--redis-appendfsync everysec``; RocksDB syncs
its WAL on every batch. The load generator shares the machine (and its cores) with the server,
the broker and Redis, so absolute figures are a floor. Every figure is the median of
``--repeats`` runs. Results: ``bench/results/serving.json``.

    python -m bench.serving            # full run (a few minutes)
    python -m bench.serving --quick    # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson
import redis
from prometheus_client import CollectorRegistry

from bench.report import machine_info, save_results, table
from lte_core.update import LTEUpdate, encode_update
from lte_runtime.embedded_broker import EmbeddedBroker
from lte_runtime.kafka.batch_sender import BatchSender, OutRecord
from lte_runtime.kafka.settings import KafkaSettings
from lte_runtime.ports import free_port
from lte_runtime.redis_server import RedisServer
from serving.refresher import Refresher
from serving.settings import RefresherSettings
from serving.store_url import RedisLocation, RocksDBLocation, StoreLocation, open_store

ROOT = Path(__file__).resolve().parent.parent
BASIS = "bench-basis"
STORE_BATCH = 5000


def make_updates(users: int, count: int, d: int, seed: int) -> list[LTEUpdate]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, d)).astype(np.float32)
    out = []
    for i in range(count):
        as_of = 1.7e9 + i
        out.append(
            LTEUpdate(
                user_id=f"user-{i % users}",
                basis_version=BASIS,
                encoder="mean",
                as_of=as_of,
                window_start=as_of - 365 * 86400,
                window_end=as_of - 28 * 86400,
                n_events=10,
                weight_sum=10.0,
                coefficients=vectors[i],
                vector=vectors[i],
                due_at=as_of - 0.5,
                produced_at=as_of - 0.25,
            )
        )
    return out


async def produce(bootstrap: str, topic: str, updates: list[LTEUpdate]) -> None:
    from aiokafka import AIOKafkaProducer  # noqa: PLC0415
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: PLC0415

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 4, 1), NewTopic(f"{topic}-dlq", 4, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, max_batch_size=1 << 20, max_request_size=8 << 20
    )
    await producer.start()
    try:
        sender = BatchSender(producer)
        for start in range(0, len(updates), 5000):
            chunk = updates[start : start + 5000]
            await sender.send(
                topic, [OutRecord(u.user_id.encode(), encode_update(u)) for u in chunk]
            )
    finally:
        await producer.stop()


def _accounted(registry: CollectorRegistry) -> float:
    return sum(
        registry.get_sample_value("lte_store_writes_total", {"outcome": o}) or 0.0
        for o in ("written", "duplicate", "stale")
    )


async def run_refresher(
    bootstrap: str, topic: str, store: StoreLocation, total: int, run: str
) -> dict[str, float]:
    registry = CollectorRegistry()
    settings = RefresherSettings(
        kafka=KafkaSettings(bootstrap=bootstrap),
        store=store,
        topic=topic,
        dlq_topic=f"{topic}-dlq",
        group_id=f"bench-{run}",
        session_timeout_ms=6000,
        metrics_port=0,
        drift_reference_size=1000,
    )
    refresher = Refresher(settings, registry)
    stop = asyncio.Event()
    task = asyncio.create_task(refresher.run(stop))
    deadline = time.monotonic() + 600
    while not refresher.readiness()[0]:
        if task.done() or time.monotonic() > deadline:
            raise RuntimeError(f"refresher did not become ready: {task}")
        await asyncio.sleep(0.005)
    started = time.perf_counter()
    while _accounted(registry) < total:
        if task.done() or time.monotonic() > deadline:
            raise RuntimeError(f"refresher stopped early: {task}")
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - started
    stop.set()
    await task
    write_seconds = registry.get_sample_value("lte_store_write_duration_seconds_sum") or 0.0
    return {"updates_s": total / elapsed, "store_share": write_seconds / elapsed}


async def run_store_only(store: StoreLocation, updates: list[LTEUpdate]) -> float:
    opened = open_store(store, writer=True)
    try:
        started = time.perf_counter()
        for start in range(0, len(updates), STORE_BATCH):
            await opened.write_batch(updates[start : start + STORE_BATCH], stored_at=time.time())
        return len(updates) / (time.perf_counter() - started)
    finally:
        await opened.close()


def store_url(store: StoreLocation) -> str:
    if isinstance(store, RedisLocation):
        return f"redis://{store.host}:{store.port}/{store.db}"
    assert isinstance(store, RocksDBLocation), store
    return f"rocksdb://{store.path}"


def start_api(store: StoreLocation, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lte_cli",
                "serve",
                "--store",
                store_url(store),
                "--port",
                str(port),
                "--basis-version",
                BASIS,
                "--encoder",
                "mean",
                "--log-level",
                "warning",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
                if resp.status == 200:
                    return process, port
        except (urllib.error.URLError, OSError):
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"lte serve did not become ready; see {log}")
        time.sleep(0.05)


async def load(
    port: int, users: int, *, concurrency: int, duration: float, batch: int
) -> dict[str, float]:
    """Closed-loop load: each client sends its next request when the last one returns."""
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        warm_until = time.perf_counter() + 1.0
        stop_at = warm_until + duration

        async def client(seed: int) -> None:
            nonlocal errors
            rng = random.Random(seed)
            while True:
                sent = time.perf_counter()
                if sent >= stop_at:
                    return
                if batch == 1:
                    request = session.get(
                        f"http://127.0.0.1:{port}/v1/lte/user-{rng.randrange(users)}"
                    )
                else:
                    ids = [f"user-{rng.randrange(users)}" for _ in range(batch)]
                    request = session.post(
                        f"http://127.0.0.1:{port}/v1/lte:batchGet",
                        data=orjson.dumps({"user_ids": ids}),
                    )
                async with request as resp:
                    await resp.read()
                    ok = resp.status == 200
                if sent >= warm_until:
                    latencies.append(time.perf_counter() - sent)
                    errors += not ok

        await asyncio.gather(*(client(i) for i in range(concurrency)))
    ordered = np.sort(np.array(latencies))
    return {
        "requests_s": len(ordered) / duration,
        "p50_ms": float(np.quantile(ordered, 0.5)) * 1000,
        "p99_ms": float(np.quantile(ordered, 0.99)) * 1000,
        "errors": float(errors),
    }


def median_dict(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description="Refresher writes/s and read-API latency.")
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--updates", type=int, default=40_000)
    parser.add_argument("--d", type=int, default=384)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--redis-appendfsync", choices=("always", "everysec"), default="always")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serving.json")
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    users = 2_000 if args.quick else args.users
    count = 6_000 if args.quick else args.updates
    duration = 2.0 if args.quick else args.duration
    updates = make_updates(users, count, args.d, seed=0)
    record_bytes = statistics.mean(len(encode_update(u)) for u in updates[:1000])
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    rows: list[dict[str, Any]] = []
    raw: dict[str, Any] = {}
    try:
        with (
            EmbeddedBroker(log_path=work / "tansu.log") as broker,
            RedisServer(work / "redis", appendfsync=args.redis_appendfsync) as redis_server,
        ):
            topic = "bench-updates"
            asyncio.run(produce(broker.bootstrap, topic, updates))
            for backend in ("redis", "rocksdb"):
                refresher_runs, store_runs = [], []
                last: StoreLocation | None = None
                for repeat in range(repeats):
                    for stage in ("refresher", "store"):
                        store = fresh_store(backend, redis_server, work, f"{stage}-{repeat}")
                        if stage == "refresher":
                            refresher_runs.append(
                                asyncio.run(
                                    run_refresher(
                                        broker.bootstrap,
                                        topic,
                                        store,
                                        count,
                                        f"{backend}-{repeat}",
                                    )
                                )
                            )
                            last = store
                        else:
                            store_runs.append(asyncio.run(run_store_only(store, updates)))
                refresher = median_dict(refresher_runs)
                rows.append(
                    {
                        "backend": backend,
                        "what": "refresher Kafka->store",
                        "updates_s": round(refresher["updates_s"]),
                        "topic_MB_s": round(refresher["updates_s"] * record_bytes / 1e6, 1),
                        "store_time_share": round(refresher["store_share"], 2),
                    }
                )
                rows.append(
                    {
                        "backend": backend,
                        "what": f"store.write_batch x{STORE_BATCH}",
                        "updates_s": round(statistics.median(store_runs)),
                        "topic_MB_s": "",
                        "store_time_share": 1.0,
                    }
                )
                print(table(rows[-2:]), flush=True)
                assert last is not None
                process, port = start_api(last, work / f"serve-{backend}.log")
                try:
                    for route, concurrency, batch in (
                        ("GET /v1/lte/{user_id}", args.concurrency, 1),
                        ("GET /v1/lte/{user_id}", 10, 1),
                        ("POST /v1/lte:batchGet (100 ids)", 20, 100),
                    ):
                        runs = [
                            asyncio.run(
                                load(
                                    port,
                                    users,
                                    concurrency=concurrency,
                                    duration=duration,
                                    batch=batch,
                                )
                            )
                            for _ in range(repeats)
                        ]
                        result = median_dict(runs)
                        raw[f"{backend} {route} c={concurrency}"] = runs
                        rows.append(
                            {
                                "backend": backend,
                                "what": f"{route} c={concurrency}",
                                "requests_s": round(result["requests_s"]),
                                "p50_ms": round(result["p50_ms"], 2),
                                "p99_ms": round(result["p99_ms"], 2),
                                "errors": int(result["errors"]),
                            }
                        )
                        print(table(rows[-1:]), flush=True)
                finally:
                    process.terminate()
                    process.wait(30)
                raw[f"{backend} refresher"] = refresher_runs
                raw[f"{backend} store"] = store_runs
    finally:
        shutil.rmtree(work, ignore_errors=True)
    refresher_rows = [r for r in rows if "updates_s" in r]
    api_rows = [r for r in rows if "requests_s" in r]
    print()
    print(table(refresher_rows))
    print()
    print(table(api_rows))
    save_results(
        args.out,
        {
            "benchmark": "serving",
            "machine": {
                **machine_info(),
                "note": "load generator, lte serve, broker and Redis share these cores",
            },
            "repeats": repeats,
            "users": users,
            "updates": count,
            "d": args.d,
            "update_record_bytes": round(record_bytes),
            "redis_appendfsync": args.redis_appendfsync,
            "quick": args.quick,
            "refresher": refresher_rows,
            "api": api_rows,
            "runs": raw,
        },
    )


def fresh_store(backend: str, server: RedisServer, work: Path, name: str) -> StoreLocation:
    if backend == "rocksdb":
        return RocksDBLocation(work / f"store-{name}")
    db = 1 + sum(map(ord, name)) % 15
    with redis.Redis(host=server.host, port=server.port, db=db) as client:
        client.flushdb()
    return RedisLocation(server.host, server.port, db)


if __name__ == "__main__":
    main()
