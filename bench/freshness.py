"""Freshness end to end, and the cost of a bucket edge that moves every silent user.

**Staleness at fixed input rates.** Embedded broker, ``lte worker`` (wall clock, lag 0,
1 s buckets, events stamped 2 s in the past so each one is in the window when it arrives),
``lte refresher`` into a real Redis (AOF, fsync always). After a burst that measures the
sustained maximum, events are produced at fixed rates — 1k, 10k, 70 % of the maximum and
50k/s when that is below the maximum — for ``--seconds`` each; the refresher's
``lte_staleness_seconds`` histogram (store write - due) is read before and after each phase,
so each row is that phase's p50 / p99 / max bucket.

**Sweep.** ``N`` users (10^6; 10^5 with ``--quick``) get one event each in the same bucket;
a worker with a frozen clock applies them, then a worker restarted with the clock moved past
the bucket's window edge has to advance every one of them (each window empties, each user
gets an update). The figure is the time from that worker being ready until all are swept and
emitted. Results: ``bench/results/freshness.json``.

    python -m bench.freshness [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import orjson
from aiokafka import AIOKafkaProducer

from bench.report import machine_info, save_results, table
from lte_runtime.embedded_broker import EmbeddedBroker
from lte_runtime.kafka.batch_sender import BatchSender
from lte_runtime.metrics_scrape import Samples, buckets, quantile, scrape, total
from lte_runtime.ports import free_port
from lte_runtime.redis_server import RedisServer
from lte_runtime.supervisor import Child, Supervisor
from offline.synthetic import SyntheticSpec, SyntheticStream
from streams.replay import replay

ROOT = Path(__file__).resolve().parent.parent
DAY = 86400


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def ready(port: int) -> bool:
    import urllib.request  # noqa: PLC0415

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def live_events(users: int, items: int, seed: int) -> Iterator[list[tuple[bytes, bytes]]]:
    """Endless chunks of events stamped just before now (in the window on arrival)."""
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, items + 1) ** 1.1
    pop /= pop.sum()
    while True:
        u = rng.integers(0, users, 2000)
        it = rng.choice(items, 2000, p=pop)
        ts = time.time() - 2.0
        yield [
            (f"u{a}".encode(), orjson.dumps({"user_id": f"u{a}", "item_id": f"i{b}", "ts": ts}))
            for a, b in zip(u.tolist(), it.tolist(), strict=True)
        ]


async def produce_for(bootstrap: str, seconds: float, rate: float, users: int) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=1 << 20, acks=1)
    await producer.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(seconds, stop.set)
    try:
        return await replay(
            BatchSender(producer),
            "interactions",
            live_events(users, 5000, int(rate)),
            rate=rate,
            stop=stop,
        )
    finally:
        await producer.stop()


def staleness_row(
    rate: float, before: Samples, after: Samples, *, sent: int, seconds: float
) -> dict[str, object]:
    b0 = dict(buckets(before, "lte_staleness_seconds"))
    delta = [(le, c - b0.get(le, 0.0)) for le, c in buckets(after, "lte_staleness_seconds")]
    top = next((le for le, c in delta if c >= delta[-1][1]), math.inf) if delta else math.nan
    return {
        "rate_target": round(rate),
        "rate_sent": round(sent / seconds),
        "updates": round(delta[-1][1]) if delta else 0,
        "p50_ms": round(quantile(delta, 0.5) * 1000, 1),
        "p99_ms": round(quantile(delta, 0.99) * 1000, 1),
        "max_bucket_ms": top * 1000 if math.isfinite(top) else "inf",
    }


def freshness(work: Path, seconds: float, users: int) -> tuple[list[dict[str, object]], float]:
    stream = SyntheticStream(SyntheticSpec(users=users, items=5000, dim=64, events=1))
    basis = stream.catalog.basis().save(work / "basis")
    supervisor = Supervisor()
    wport, rport = free_port(), free_port()
    with (
        EmbeddedBroker(log_path=work / "tansu.log") as broker,
        RedisServer(work / "redis") as redis,
    ):
        try:
            worker = supervisor.start(
                "worker",
                [
                    "worker",
                    "--broker",
                    broker.bootstrap,
                    "--basis",
                    str(basis),
                    "--window",
                    "1d",
                    "--lag",
                    "0",
                    "--bucket",
                    "1s",
                    "--state-dir",
                    str(work / "state"),
                    "--metrics-port",
                    str(wport),
                    "--session-timeout-ms",
                    "6000",
                    "--log-level",
                    "warning",
                ],
                work / "worker.log",
            )
            refresher: Child = supervisor.start(
                "refresher",
                [
                    "refresher",
                    "--broker",
                    broker.bootstrap,
                    "--store",
                    redis.url,
                    "--metrics-port",
                    str(rport),
                    "--session-timeout-ms",
                    "6000",
                    "--log-level",
                    "warning",
                ],
                work / "refresher.log",
            )
            wait_for(lambda: ready(wport) and ready(rport), 90, "worker and refresher")
            del worker, refresher

            def drained() -> bool:
                w = scrape(f"http://127.0.0.1:{wport}/metrics")
                r = scrape(f"http://127.0.0.1:{rport}/metrics")
                return (
                    total(w, "lte_consumer_lag") == 0
                    and total(r, "lte_consumer_lag") == 0
                    and total(r, "lte_store_writes_total") >= total(w, "lte_updates_emitted_total")
                )

            # The sustained maximum: produce flat out, measure what the worker applied.
            w0 = total(scrape(f"http://127.0.0.1:{wport}/metrics"), "lte_events_total")
            started = time.perf_counter()
            asyncio.run(produce_for(broker.bootstrap, seconds, 0.0, users))
            wait_for(drained, 600, "the burst to drain")
            w1 = total(scrape(f"http://127.0.0.1:{wport}/metrics"), "lte_events_total")
            maximum = (w1 - w0) / (time.perf_counter() - started)
            print(f"  sustained maximum ≈ {maximum:,.0f} events/s", flush=True)
            rates = [1_000.0, 10_000.0, 0.7 * maximum] + ([50_000.0] if maximum > 50_000 else [])
            rows = []
            for rate in sorted(rates):
                before = scrape(f"http://127.0.0.1:{rport}/metrics")
                sent = asyncio.run(produce_for(broker.bootstrap, seconds, rate, users))
                wait_for(drained, 600, f"the {rate:.0f}/s phase to drain")
                after = scrape(f"http://127.0.0.1:{rport}/metrics")
                rows.append(staleness_row(rate, before, after, sent=sent, seconds=seconds))
                print(table(rows[-1:]), flush=True)
            return rows, maximum
        finally:
            supervisor.stop_all()


def sweep(work: Path, users: int) -> dict[str, object]:
    stream = SyntheticStream(SyntheticSpec(users=10, items=5000, dim=64, events=1))
    basis = stream.catalog.basis().save(work / "sweep-basis")
    t1 = 1_700_000_000.0
    supervisor = Supervisor()
    with EmbeddedBroker(log_path=work / "sweep-tansu.log") as broker:
        try:
            rng = np.random.default_rng(1)
            items = rng.integers(0, 5000, users)
            # Mid-bucket of b(t1) - 1: visible in the 30d window at t1, not merely pending.
            event_ts = (math.floor(t1 / DAY) - 1) * DAY + DAY / 2

            def chunks() -> Iterator[list[tuple[bytes, bytes]]]:
                for lo in range(0, users, 20_000):
                    yield [
                        (
                            f"s{u}".encode(),
                            orjson.dumps(
                                {"user_id": f"s{u}", "item_id": f"i{items[u]}", "ts": event_ts}
                            ),
                        )
                        for u in range(lo, min(lo + 20_000, users))
                    ]

            async def load() -> None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=broker.bootstrap, max_batch_size=1 << 20, acks=1
                )
                await producer.start()
                try:
                    await replay(BatchSender(producer), "interactions", chunks())
                finally:
                    await producer.stop()

            asyncio.run(load())
            common = [
                "--broker",
                broker.bootstrap,
                "--basis",
                str(basis),
                "--window",
                "30d",
                "--lag",
                "0",
                "--bucket",
                "1d",
                "--state-dir",
                str(work / "sweep-state"),
                "--session-timeout-ms",
                "6000",
                "--log-level",
                "warning",
            ]
            port = free_port()
            first = supervisor.start(
                "worker",
                ["worker", *common, "--now", repr(t1), "--metrics-port", str(port)],
                work / "sweep-1.log",
            )
            wait_for(
                lambda: (
                    total(scrape(f"http://127.0.0.1:{port}/metrics"), "lte_events_total") >= users
                ),
                1800,
                "the users to load",
            )
            first.stop()
            # Past the edge where that bucket leaves a 30d window: every window empties.
            t2 = t1 + 31 * DAY
            port = free_port()
            supervisor.start(
                "worker",
                ["worker", *common, "--now", repr(t2), "--metrics-port", str(port)],
                work / "sweep-2.log",
            )
            wait_for(lambda: ready(port), 120, "the restarted worker")
            started = time.perf_counter()

            def swept() -> bool:
                m = scrape(f"http://127.0.0.1:{port}/metrics")
                return (
                    total(m, "lte_sweep_users_total") >= users
                    and total(m, "lte_updates_emitted_total", trigger="clock") >= users
                )

            wait_for(swept, 1800, "the sweep")
            elapsed = time.perf_counter() - started
            return {
                "silent_users": users,
                "sweep_seconds": round(elapsed, 2),
                "users_per_s": round(users / elapsed),
            }
        finally:
            supervisor.stop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description="End-to-end freshness and sweep cost.")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per rate phase")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "freshness.json")
    args = parser.parse_args()
    seconds = args.seconds or (5.0 if args.quick else 20.0)
    users = 10_000 if args.quick else 100_000
    sweep_users = 100_000 if args.quick else 1_000_000
    with tempfile.TemporaryDirectory(prefix="lte-fresh-") as tmp:
        rows, maximum = freshness(Path(tmp), seconds, users)
        swept = sweep(Path(tmp), sweep_users)
    print()
    print(table(rows))
    print(table([swept]))
    save_results(
        args.out,
        {
            "benchmark": "freshness",
            "machine": machine_info(),
            "quick": args.quick,
            "seconds_per_phase": seconds,
            "users": users,
            "sustained_max_events_per_s": round(maximum),
            "rows": rows,
            "sweep": swept,
        },
    )


if __name__ == "__main__":
    main()
