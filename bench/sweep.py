"""The silent-user sweep on the worker's own state, in process: how long a bucket edge that
empties every user's window takes to reach ``lte-updates``.

Each repeat starts a fresh embedded broker and a real :class:`streams.engine_host.EngineHost`
(RocksDB window store, changelog with fencing, Avro updates — what ``lte worker`` runs,
without Faust, which the sweep does not go through). ``N`` users (10^6; 10^5 with
``--quick``) get one event each in the same day bucket, applied at a frozen clock ``t1`` in
batches of 20,000 (the worker's default batch); then a second host on the same state
directory, with its clock past the edge where that bucket leaves the 30-day window, restores
and claims the partition and the sweep advances every user (each window empties, each user
gets an update and its changelog records). The figure is the time of ``EngineHost.sweep()``
until no user is due, reported with µs per user, and the CPU time of this process over the
same call (RocksDB's threads included, the broker not: on a shared machine the steadier of the
two); medians of ``--repeats``.

Reference in the same run: ``apply``, the time the same host took to apply the users' first
events (the event path over the same users and the same store). Results:
``bench/results/sweep.json``.

    python -m bench.sweep [--quick] [--users N] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import orjson

from bench.report import machine_info, save_results, table
from lte_core.encoders import EncoderSpec
from lte_core.window import WindowSpec
from lte_runtime.embedded_broker import EmbeddedBroker
from lte_runtime.kafka.settings import KafkaSettings
from offline.synthetic import SyntheticSpec, SyntheticStream
from streams.engine_host import EngineHost
from streams.settings import WorkerSettings

ROOT = Path(__file__).resolve().parent.parent
DAY = 86400
T1 = 1_700_000_000.0
BATCH = 20_000


class Record(NamedTuple):
    key: bytes
    value: bytes
    offset: int
    timestamp: int


class TopicPartition(NamedTuple):
    topic: str
    partition: int


def settings(bootstrap: str, basis: Path, state: Path, now: float) -> WorkerSettings:
    return WorkerSettings(
        kafka=KafkaSettings(bootstrap),
        basis_dir=basis,
        window=WindowSpec.parse("30d", "0", "1d"),
        encoder=EncoderSpec.parse("mean"),
        state_dir=state,
        partitions=1,
        now=now,
    )


async def one_run(bootstrap: str, basis: Path, state: Path, users: int) -> dict[str, float]:
    rng = np.random.default_rng(1)
    items = rng.integers(0, 5000, users).tolist()
    # mid-bucket of b(t1) - 1: in the 30d window at t1, not merely pending
    event_ts = (math.floor(T1 / DAY) - 1) * DAY + DAY / 2
    stamp = int(T1 * 1000)
    host = EngineHost(settings(bootstrap, basis, state, T1))
    await host.start()
    tp = TopicPartition("interactions", 0)
    try:
        await host.assign([tp])
        started = time.perf_counter()
        for lo in range(0, users, BATCH):
            records = [
                Record(
                    f"s{u}".encode(),
                    orjson.dumps({"user_id": f"s{u}", "item_id": f"i{items[u]}", "ts": event_ts}),
                    u,
                    stamp,
                )
                for u in range(lo, min(lo + BATCH, users))
            ]
            await host.process(0, records)
        applied = time.perf_counter() - started
    finally:
        await host.stop()
    # past the edge where that bucket leaves a 30d window: every window empties
    host = EngineHost(settings(bootstrap, basis, state, T1 + 31 * DAY))
    await host.start()
    try:
        await host.assign([tp])
        swept_before = host.metrics.sweep_users._value.get()
        started, cpu = time.perf_counter(), time.process_time()
        await host.sweep()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        swept = host.metrics.sweep_users._value.get() - swept_before
    finally:
        await host.stop()
    if swept != users:
        raise RuntimeError(f"swept {swept:.0f} users, expected {users}")
    return {"apply_s": applied, "sweep_s": elapsed, "sweep_cpu_s": cpu, "load": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description="Silent-user sweep on a real RocksDB state.")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--users", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--label", default="")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sweep.json")
    args = parser.parse_args()
    users = args.users or (100_000 if args.quick else 1_000_000)
    repeats = 1 if args.quick else args.repeats
    runs: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="lte-sweep-") as tmp:
        work = Path(tmp)
        stream = SyntheticStream(SyntheticSpec(users=10, items=5000, dim=64, events=1))
        basis = stream.catalog.basis().save(work / "basis")
        for r in range(repeats):
            with EmbeddedBroker(log_path=work / "tansu.log") as broker:
                runs.append(
                    asyncio.run(one_run(broker.bootstrap, basis, work / f"state-{r}", users))
                )
            print(
                f"  run {r + 1}: apply {runs[-1]['apply_s']:.2f} s, "
                f"sweep {runs[-1]['sweep_s']:.2f} s ({runs[-1]['sweep_cpu_s']:.2f} s CPU of this "
                f"process), load {runs[-1]['load']:.1f}",
                flush=True,
            )
    sweep_s = statistics.median(r["sweep_s"] for r in runs)
    apply_s = statistics.median(r["apply_s"] for r in runs)
    row = {
        "label": args.label,
        "silent_users": users,
        "sweep_seconds": round(sweep_s, 2),
        "us_per_user": round(sweep_s / users * 1e6, 1),
        "cpu_us_per_user": round(
            statistics.median(r["sweep_cpu_s"] for r in runs) / users * 1e6, 1
        ),
        "users_per_s": round(users / sweep_s),
        "apply_seconds": round(apply_s, 2),
    }
    print(table([row]))
    save_results(
        args.out,
        {
            "benchmark": "sweep",
            "machine": machine_info(),
            "quick": args.quick,
            "repeats": repeats,
            "sweep": row,
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
