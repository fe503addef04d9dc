"""Benchmark of the serving layer: the refresher and the read API, each beside a bare
reference measured in the same run on the same machine.

* ``refresher (Avro)`` / ``refresher (JSON)``: ``--updates`` LTE updates (d = ``--d``
  float32, K = d as with the identity basis) for ``--users`` users on the embedded broker, one
  topic per update format, consumed by an in-process :class:`serving.refresher.Refresher`
  with its default batch size into Redis, from the moment it has joined its group until every
  record is accounted for. Kafka fetch, decode, coalescing, the store write (the monotonic Lua
  script), drift/staleness accounting and the offset commit are all inside the figure.
* ``bare loop``: the reference for the refresher — a consumer built the same way
  (``group_consumer``, same batch size) that reads the Avro topic and writes each record's
  bytes to the same Redis with pipelined ``SET``s, committing offsets per batch: the cost of
  moving those bytes with no decoding and no rules. ``x_bare`` = refresher / bare loop.
* ``refresher (Avro) → rocksdb``: the Avro topic into the embedded RocksDB store.
* ``GET``: ``lte serve`` as its own process over the store the refresher filled;
  ``--concurrency`` aiohttp clients (one keep-alive connection each) ask for random users for
  ``--duration`` seconds after a 1 s warm-up, once asking for JSON and once for the binary form
  (``Accept: application/octet-stream``); p50/p99 of the per-request latency seen by the
  client. Its reference is ``bench.bare_http``: an aiohttp process whose one route returns a
  fixed body of the mean size of the API's answer in that format, under the same load. With a
  closed loop p50 is about concurrency / throughput: at 200 clients it measures queueing on a
  saturated machine; at 10 the latency of one request when the server is not saturated.
  A second reference, ``bare + GET`` (``x_bare_redis``), is the same bare handler doing one
  redis-py ``GET`` of the user's entry per request: the floor of any read path that must ask
  the store for every request (no cache), which bounds what the API can reach at c=10.
* ``batchGet``: 100 users per request at concurrency 20, JSON and binary.

Beside each rate, the CPU seconds a run cost per update or request (``cpu_us``: the
refresher's process — it runs in this one —, or the server process of a ``GET`` run, read from
``/proc``; ``redis_cpu_us``: the Redis server's): on a shared machine a rate moves with the
other users' load, while the CPU per operation moves much less, so it says which side got
cheaper when the rates are noisy.

Redis runs with ``appendonly yes`` and ``appendfsync always`` unless
``--redis-appendfsync everysec``; RocksDB syncs its WAL on every batch. The load generator
shares the machine (2 cores, shared with other users' work) with the server, the broker and
Redis, so absolute figures are a floor and runs are noisy; the references are measured
interleaved with what they bound, and every figure is the median of ``--repeats`` runs.
Results: ``bench/results/serving.json``.

    nice -n 10 python -m bench.serving            # full run (a few minutes)
    nice -n 10 python -m bench.serving --quick    # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import os
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
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from bench.report import machine_info, save_results, table
from lte_core import update_avro
from lte_core.update import LTEUpdate, encode_update
from lte_runtime.embedded_broker import EmbeddedBroker
from lte_runtime.kafka.batch_sender import BatchSender, OutRecord
from lte_runtime.kafka.clients import group_consumer
from lte_runtime.kafka.settings import KafkaSettings
from lte_runtime.ports import free_port
from lte_runtime.redis_server import RedisServer
from serving.online_store import StoreKey
from serving.refresher import Refresher
from serving.settings import RefresherSettings
from serving.store_format import entry_key
from serving.store_url import RedisLocation, RocksDBLocation, StoreLocation

ROOT = Path(__file__).resolve().parent.parent
BASIS = "bench-basis"


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


async def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
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
        for start in range(0, len(records), 5000):
            chunk = records[start : start + 5000]
            await sender.send(topic, [OutRecord(key, value) for key, value in chunk])
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
    cpu_before = time.process_time()
    while _accounted(registry) < total:
        if task.done() or time.monotonic() > deadline:
            raise RuntimeError(f"refresher stopped early: {task}")
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    stop.set()
    await task
    write_seconds = registry.get_sample_value("lte_store_write_duration_seconds_sum") or 0.0
    return {
        "updates_s": total / elapsed,
        "store_share": write_seconds / elapsed,
        "cpu_us": cpu / total * 1e6,
    }


async def run_bare_loop(
    bootstrap: str, topic: str, store: RedisLocation, total: int, run: str
) -> float:
    """Consume ``topic`` and SET every record's bytes into Redis, pipelined per batch, with
    the refresher's consumer settings and batch size; records/s from the assignment on."""
    from aiokafka import ConsumerRebalanceListener  # noqa: PLC0415

    assigned = asyncio.Event()

    class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
        async def on_partitions_revoked(self, revoked: object) -> None:
            pass

        async def on_partitions_assigned(self, partitions: object) -> None:
            assigned.set()

    defaults = RefresherSettings(kafka=KafkaSettings(bootstrap=bootstrap), store=store)
    consumer = group_consumer(
        defaults.kafka,
        f"bench-bare-{run}",
        session_timeout_ms=6000,
        max_poll_interval_ms=3_600_000,
    )
    client = aioredis.Redis(host=store.host, port=store.port, db=store.db)
    consumer.subscribe([topic], listener=Listener())
    await consumer.start()
    try:
        done = 0
        started = 0.0
        while done < total:
            batches = await consumer.getmany(
                timeout_ms=defaults.batch_timeout_ms, max_records=defaults.batch_max_records
            )
            if assigned.is_set() and not started:
                started = time.perf_counter()
            if not any(batches.values()):
                continue
            async with client.pipeline(transaction=False) as pipe:
                for records in batches.values():
                    for record in records:
                        pipe.set(b"bare:" + record.key, record.value)
                        done += 1
                await pipe.execute()
            await consumer.commit(
                {tp: records[-1].offset + 1 for tp, records in batches.items() if records}
            )
        return total / (time.perf_counter() - started)
    finally:
        await consumer.stop()
        await client.aclose()


def _cpu(result: dict[str, float]) -> dict[str, float]:
    return {
        "cpu_us": round(result["cpu_us"], 1),
        "redis_cpu_us": round(result["redis_cpu_us"], 1),
    }


def process_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far; 0 where unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def store_url(store: StoreLocation) -> str:
    if isinstance(store, RedisLocation):
        return f"redis://{store.host}:{store.port}/{store.db}"
    assert isinstance(store, RocksDBLocation), store
    return f"rocksdb://{store.path}"


def start_api(store: StoreLocation, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    return start_server(
        [
            *("lte_cli", "serve", "--store", store_url(store)),
            *("--basis-version", BASIS, "--encoder", "mean", "--log-level", "warning"),
        ],
        log,
    )


def start_server(module_args: list[str], log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """``python -m <module_args> --port P`` on a free port, once its /readyz answers."""
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", *module_args, "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    wait_ready(process, port, log)
    return process, port


async def load(
    port: int, users: int, *, concurrency: int, duration: float, batch: int, accept: str
) -> dict[str, float]:
    """Closed-loop load: each client sends its next request when the last one returns."""
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers={"Accept": accept}) as session:
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


ACCEPT = {"JSON": "application/json", "binary": "application/octet-stream"}


def start_bare(
    size: int, content_type: str, log: Path, *, redis_store: StoreLocation | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """The bare handler; with ``redis_store``, one that first GETs the user's entry."""
    extra: list[str] = []
    if isinstance(redis_store, RedisLocation):
        prefix = entry_key(StoreKey(BASIS, "mean", "")).decode()
        extra = ["--redis-url", store_url(redis_store), "--redis-key-prefix", prefix]
    return start_server(
        ["bench.bare_http", "--size", str(size), "--content-type", content_type, *extra], log
    )


def wait_ready(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"server did not become ready; see {log}")
        time.sleep(0.05)


def body_size(port: int, users: int, accept: str) -> int:
    sizes = []
    for i in range(0, users, max(1, users // 50)):
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/lte/user-{i}", headers={"Accept": accept}
        )
        with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310 - http://127.0.0.1
            sizes.append(len(resp.read()))
    return round(statistics.mean(sizes))


def measure_refreshers(
    broker: EmbeddedBroker,
    redis_server: RedisServer,
    work: Path,
    *,
    topics: dict[str, str],
    count: int,
    repeats: int,
    backends: list[str],
) -> tuple[list[dict[str, Any]], dict[str, Any], StoreLocation]:
    runs: dict[str, list[dict[str, float]]] = {}
    last: StoreLocation | None = None
    for repeat in range(repeats):
        stages = [("redis", "Avro"), ("redis", "JSON"), ("bare", "Avro")]
        stages += [(b, "Avro") for b in backends if b != "redis"]
        for backend, fmt in stages:
            name = f"{backend}-{fmt}-{repeat}"
            store = fresh_store("redis" if backend == "bare" else backend, redis_server, work, name)
            redis_before = process_cpu(redis_server.pid)
            if backend == "bare":
                assert isinstance(store, RedisLocation)
                cpu_before = time.process_time()
                rate = asyncio.run(run_bare_loop(broker.bootstrap, topics[fmt], store, count, name))
                cpu_us = (time.process_time() - cpu_before) / count * 1e6
                result = {"updates_s": rate, "store_share": 0.0, "cpu_us": cpu_us}
            else:
                result = asyncio.run(
                    run_refresher(broker.bootstrap, topics[fmt], store, count, name)
                )
                if backend == "redis" and fmt == "Avro":
                    last = store
            result["redis_cpu_us"] = (process_cpu(redis_server.pid) - redis_before) / count * 1e6
            runs.setdefault(f"{backend} {fmt}", []).append(result)
            print(
                f"  {name}: {round(result['updates_s']):,} updates/s, "
                f"{result['cpu_us']:.0f} µs CPU per update",
                flush=True,
            )
    medians = {k: median_dict(v) for k, v in runs.items()}
    bare = medians["bare Avro"]["updates_s"]
    avro = medians["redis Avro"]["updates_s"]
    json_rate = medians["redis JSON"]["updates_s"]
    rows: list[dict[str, Any]] = [
        {
            "backend": "redis",
            "what": "refresher (Avro)",
            "updates_s": round(avro),
            "x_bare": round(avro / bare, 2),
            "x_json": round(avro / json_rate, 2),
            "store_time_share": round(medians["redis Avro"]["store_share"], 2),
            **_cpu(medians["redis Avro"]),
        },
        {
            "backend": "redis",
            "what": "refresher (JSON)",
            "updates_s": round(json_rate),
            "x_bare": round(json_rate / bare, 2),
            "x_json": 1.0,
            "store_time_share": round(medians["redis JSON"]["store_share"], 2),
            **_cpu(medians["redis JSON"]),
        },
        {
            "backend": "redis",
            "what": "bare loop: consume + pipelined SET (Avro bytes)",
            "updates_s": round(bare),
            "x_bare": 1.0,
            "x_json": "",
            "store_time_share": "",
            **_cpu(medians["bare Avro"]),
        },
    ]
    for backend in backends:
        if backend != "redis":
            rate = medians[f"{backend} Avro"]["updates_s"]
            rows.append(
                {
                    "backend": backend,
                    "what": "refresher (Avro)",
                    "updates_s": round(rate),
                    "x_bare": round(rate / bare, 2),
                    "x_json": "",
                    "store_time_share": round(medians[f"{backend} Avro"]["store_share"], 2),
                    **_cpu(medians[f"{backend} Avro"]),
                }
            )
    assert last is not None
    return rows, runs, last


def measure_api(
    store: StoreLocation, work: Path, *, users: int, duration: float, repeats: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    raw: dict[str, Any] = {}
    process, port = start_api(store, work / "serve.log")
    try:
        sizes = {fmt: body_size(port, users, accept) for fmt, accept in ACCEPT.items()}
        for fmt, accept in ACCEPT.items():
            bare, bare_port = start_bare(sizes[fmt], accept, work / f"bare-{fmt}.log")
            with_redis, redis_port = start_bare(
                sizes[fmt], accept, work / f"bare-redis-{fmt}.log", redis_store=store
            )
            try:
                for concurrency in (10, 200):
                    api_runs: list[dict[str, float]] = []
                    bare_runs: list[dict[str, float]] = []
                    redis_runs: list[dict[str, float]] = []
                    for _ in range(repeats):
                        for runs, target, server in (
                            (api_runs, port, process),
                            (bare_runs, bare_port, bare),
                            (redis_runs, redis_port, with_redis),
                        ):
                            before = process_cpu(server.pid)
                            result = asyncio.run(
                                load(
                                    target,
                                    users,
                                    concurrency=concurrency,
                                    duration=duration,
                                    batch=1,
                                    accept=accept,
                                )
                            )
                            served = max(1.0, result["requests_s"] * duration)
                            result["cpu_us"] = (process_cpu(server.pid) - before) / served * 1e6
                            runs.append(result)
                    api, ref = median_dict(api_runs), median_dict(bare_runs)
                    with_get = median_dict(redis_runs)
                    what = f"GET /v1/lte/{{user_id}} {fmt} c={concurrency}"
                    raw[what] = {"api": api_runs, "bare": bare_runs, "bare_redis": redis_runs}
                    rows.append(
                        {
                            "what": what,
                            "body_bytes": sizes[fmt],
                            "requests_s": round(api["requests_s"]),
                            "p50_ms": round(api["p50_ms"], 2),
                            "p99_ms": round(api["p99_ms"], 2),
                            "bare_requests_s": round(ref["requests_s"]),
                            "bare_p50_ms": round(ref["p50_ms"], 2),
                            "bare_p99_ms": round(ref["p99_ms"], 2),
                            "x_bare": round(api["requests_s"] / ref["requests_s"], 2),
                            "bare_redis_requests_s": round(with_get["requests_s"]),
                            "bare_redis_p50_ms": round(with_get["p50_ms"], 2),
                            "x_bare_redis": round(api["requests_s"] / with_get["requests_s"], 2),
                            "server_cpu_us": round(api["cpu_us"]),
                            "bare_cpu_us": round(ref["cpu_us"]),
                            "bare_redis_cpu_us": round(with_get["cpu_us"]),
                            "errors": int(api["errors"]),
                        }
                    )
                    print(table(rows[-1:]), flush=True)
            finally:
                for server in (bare, with_redis):
                    server.terminate()
                    server.wait(30)
        for fmt, accept in ACCEPT.items():
            runs = [
                asyncio.run(
                    load(port, users, concurrency=20, duration=duration, batch=100, accept=accept)
                )
                for _ in range(repeats)
            ]
            result = median_dict(runs)
            what = f"POST /v1/lte:batchGet (100 ids) {fmt} c=20"
            raw[what] = runs
            rows.append(
                {
                    "what": what,
                    "body_bytes": "",
                    "requests_s": round(result["requests_s"]),
                    "p50_ms": round(result["p50_ms"], 2),
                    "p99_ms": round(result["p99_ms"], 2),
                    "bare_requests_s": "",
                    "bare_p50_ms": "",
                    "bare_p99_ms": "",
                    "x_bare": "",
                    "bare_redis_requests_s": "",
                    "bare_redis_p50_ms": "",
                    "x_bare_redis": "",
                    "server_cpu_us": "",
                    "bare_cpu_us": "",
                    "bare_redis_cpu_us": "",
                    "errors": int(result["errors"]),
                }
            )
            print(table(rows[-1:]), flush=True)
    finally:
        process.terminate()
        process.wait(30)
    return rows, raw


def main() -> None:
    parser = argparse.ArgumentParser(description="Refresher updates/s and read-API load.")
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--updates", type=int, default=40_000)
    parser.add_argument("--d", type=int, default=384)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--backends", default="redis,rocksdb", help="refresher stores")
    parser.add_argument("--redis-appendfsync", choices=("always", "everysec"), default="always")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serving.json")
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    users = 2_000 if args.quick else args.users
    count = 6_000 if args.quick else args.updates
    duration = 2.0 if args.quick else args.duration
    backends = args.backends.split(",")
    updates = make_updates(users, count, args.d, seed=0)
    encoded = {
        "Avro": [(u.user_id.encode(), update_avro.encode(u)) for u in updates],
        "JSON": [(u.user_id.encode(), encode_update(u)) for u in updates],
    }
    record_bytes = {
        fmt: round(statistics.mean(len(v) for _, v in recs)) for fmt, recs in encoded.items()
    }
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    try:
        with (
            EmbeddedBroker(log_path=work / "tansu.log") as broker,
            RedisServer(work / "redis", appendfsync=args.redis_appendfsync) as redis_server,
        ):
            topics = {fmt: f"bench-updates-{fmt.lower()}" for fmt in encoded}
            for fmt, records in encoded.items():
                asyncio.run(produce(broker.bootstrap, topics[fmt], records))
            refresher_rows, refresher_raw, filled = measure_refreshers(
                broker,
                redis_server,
                work,
                topics=topics,
                count=count,
                repeats=repeats,
                backends=backends,
            )
            print(table(refresher_rows), flush=True)
            api_rows, api_raw = measure_api(
                filled, work, users=users, duration=duration, repeats=repeats
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
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
                "note": "load generator, servers, broker and Redis share these cores; "
                "the machine is shared with other users' work (noisy)",
                "loadavg_before": load_before,
                "loadavg_after": Path("/proc/loadavg").read_text().split()[:3],
            },
            "repeats": repeats,
            "users": users,
            "updates": count,
            "d": args.d,
            "update_record_bytes": record_bytes,
            "redis_appendfsync": args.redis_appendfsync,
            "quick": args.quick,
            "refresher": refresher_rows,
            "api": api_rows,
            "runs": {"refresher": refresher_raw, "api": api_raw},
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
