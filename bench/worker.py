"""Worker throughput on the embedded broker, against the broker's own limit in the same run.

For each configuration it starts a fresh embedded broker, produces a synthetic stream
(``offline.synthetic``: Zipf items, heavy-tailed users) to ``interactions``, then measures

* ``limit``: a bare aiokafka consumer reading the same topic and ``orjson.loads``-ing every
  value, no processing — what no consumer in Python can beat here;
* ``worker``: ``lte worker`` (a real process) from the moment it is ready (partitions
  assigned) until every record is processed: consume → validate → window state → emit
  updates → changelog → RocksDB.

It also reports ``writes_per_event`` (``lte_state_writes_total`` / events: every RocksDB put
and delete, index and metadata included) and the worker's peak RSS (``VmHWM``).

Figures are medians over ``--repeats`` runs; ``ratio`` = worker / limit. Results:
``bench/results/worker.json``.

    python -m bench.worker --quick
    python -m bench.worker     # 1e5 and 1e6 users: 2e6 events at d=64, 5e5 at d=384
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.report import machine_info, save_results, table
from lte_runtime.embedded_broker import EmbeddedBroker
from lte_runtime.kafka.batch_sender import BatchSender
from lte_runtime.metrics_scrape import scrape, total
from lte_runtime.ports import free_port
from offline.synthetic import SyntheticSpec, SyntheticStream
from streams.replay import log_records

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Config:
    events: int
    users: int
    dim: int


async def produce(bootstrap: str, stream: SyntheticStream) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=1 << 20, acks=1)
    await producer.start()
    sender = BatchSender(producer)
    try:
        for chunk in stream.chunks():
            await sender.send("interactions", log_records(chunk))
    finally:
        await producer.stop()


def interactions_reader(bootstrap: str) -> AIOKafkaConsumer:
    """A consumer of ``interactions`` from the start, outside any group, big fetches."""
    return AIOKafkaConsumer(
        "interactions",
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=16 << 20,
        fetch_max_bytes=64 << 20,
    )


async def bare_consume(bootstrap: str, n: int) -> float:
    consumer = interactions_reader(bootstrap)
    await consumer.start()
    seen = 0
    started = None
    try:
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=20_000)
            if started is None and batch:
                started = time.perf_counter()
            for records in batch.values():
                for record in records:
                    orjson.loads(record.value)
                seen += len(records)
    finally:
        await consumer.stop()
    assert started is not None
    return n / (time.perf_counter() - started)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - local URL
            return bool(resp.status == 200)
    except OSError:
        return False


def metric_total(port: int, name: str) -> float:
    """Sum of the samples of ``name`` on the process's ``/metrics`` (0 when it does not
    answer)."""
    return total(scrape(f"http://127.0.0.1:{port}/metrics"), name)


def finish_poll(elapsed: float, done: float, n: float) -> float:
    """Seconds to wait before scraping again: half the time the rate so far says is left,
    between 10 ms and 1 s. A scrape of ``/metrics`` costs the worker ~1 ms of its one
    thread (py-spy: 5% of its main thread at d=384 when scraped every 20 ms), work no
    production scrape interval (15 s) asks of it; this needs ~10-20 scrapes per run and
    still ends within 10 ms of the last event."""
    left = elapsed * (n - done) / done
    return min(1.0, max(0.01, left / 2))


@dataclass(frozen=True)
class WorkerRun:
    events_s: float
    writes_per_event: float
    peak_rss_mb: float


def peak_rss_mb(pid: int) -> float:
    """The process's high-water resident set (``VmHWM``), read while it is alive."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_worker(
    bootstrap: str, basis: Path, state: Path, *, now: float, n: int, log: Path
) -> WorkerRun:
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "lte_cli",
        "worker",
        "--broker",
        bootstrap,
        "--basis",
        str(basis),
        "--window",
        "30d",
        "--lag",
        "7d",
        "--bucket",
        "1d",
        "--now",
        repr(now),
        "--state-dir",
        str(state),
        "--metrics-port",
        str(port),
        "--session-timeout-ms",
        "6000",
        "--max-future-skew",
        "1d",
        "--log-level",
        "warning",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + 1800
        ready = None
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"worker exited: {log.read_text()[-2000:]}")
            pause = 0.02
            if ready is None:
                if http_ok(f"http://127.0.0.1:{port}/readyz"):
                    ready = time.perf_counter()
            elif (done := metric_total(port, "lte_worker_batch_events_sum")) >= n:
                rate = n / (time.perf_counter() - ready)
                return WorkerRun(
                    events_s=rate,
                    writes_per_event=metric_total(port, "lte_state_writes_total") / n,
                    peak_rss_mb=peak_rss_mb(process.pid),
                )
            elif done:
                pause = finish_poll(time.perf_counter() - ready, done, n)
            time.sleep(pause)
        raise RuntimeError("worker did not finish in time")
    finally:
        process.terminate()
        process.wait(30)


def measure(config: Config, repeats: int, work: Path) -> dict[str, object]:
    spec = SyntheticSpec(
        users=config.users,
        items=5000,
        dim=config.dim,
        events=config.events,
        days=45,
        start=1_700_000_000.0,
    )
    stream = SyntheticStream(spec)
    basis = stream.catalog.basis().save(work / f"basis-{config.dim}")
    now = spec.start + spec.days * 86400 + 1
    limits: list[float] = []
    workers: list[float] = []
    writes: list[float] = []
    rss: list[float] = []
    for r in range(repeats):
        with EmbeddedBroker(log_path=work / "tansu.log") as broker:
            asyncio.run(produce(broker.bootstrap, SyntheticStream(spec)))
            limits.append(asyncio.run(bare_consume(broker.bootstrap, config.events)))
            state = work / f"state-{r}-{time.time()}"
            run = run_worker(
                broker.bootstrap, basis, state, now=now, n=config.events, log=work / "worker.log"
            )
            shutil.rmtree(state, ignore_errors=True)
            workers.append(run.events_s)
            writes.append(run.writes_per_event)
            rss.append(run.peak_rss_mb)
        print(f"  run {r + 1}: limit {limits[-1]:,.0f}/s worker {workers[-1]:,.0f}/s", flush=True)
    limit, worker = statistics.median(limits), statistics.median(workers)
    return {
        "events": config.events,
        "users": config.users,
        "d": config.dim,
        "limit_ev_s": round(limit),
        "worker_ev_s": round(worker),
        "ratio": round(worker / limit, 3),
        "writes_per_event": round(statistics.median(writes), 3),
        "peak_rss_mb": round(max(rss)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Worker throughput vs the broker limit.")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "worker.json")
    args = parser.parse_args()
    if args.quick:
        configs, repeats = [Config(100_000, 10_000, 64)], 1
    else:
        # The embedded broker keeps every topic in memory: 2e6 events at d=384 would put
        # ~2e6 update records of ~8.6 kB (~17 GB) in RAM, so d=384 runs 5e5 events.
        configs = [Config(2_000_000, users, 64) for users in (100_000, 1_000_000)]
        configs += [Config(500_000, users, 384) for users in (100_000, 1_000_000)]
        repeats = args.repeats
    rows = []
    with tempfile.TemporaryDirectory(prefix="lte-bench-") as tmp:
        for config in configs:
            print(f"{config}", flush=True)
            rows.append(measure(config, repeats, Path(tmp)))
            print(table(rows[-1:]), flush=True)
    print()
    print(table(rows))
    save_results(
        args.out,
        {
            "benchmark": "worker",
            "machine": machine_info(),
            "repeats": repeats,
            "quick": args.quick,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
