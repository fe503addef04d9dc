"""``lte worker`` against the naive Faust peer (``bench/faust_peer_app.py``), same events.

Each repeat starts a fresh embedded broker, produces one synthetic stream (4 partitions),
and runs both consumers on it in turn:

* ``worker``: events/s from its first processed batch to its last (its metrics);
* ``peer``: events/s between its first and last emitted update (record timestamps, one
  update per event).

Results: ``bench/results/peer.json``; ``ratio`` = worker / peer (median of repeats).

    python -m bench.peer --quick
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.report import machine_info, save_results, table
from bench.worker import produce, run_worker
from lte_runtime.embedded_broker import EmbeddedBroker
from lte_runtime.ports import free_port
from offline.synthetic import SyntheticSpec, SyntheticStream

ROOT = Path(__file__).resolve().parent.parent


async def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def count_updates(bootstrap: str, topic: str, n: int, deadline: float) -> float:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    first, last, seen = float("inf"), 0.0, 0
    try:
        while seen < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the peer emitted {seen} of {n} updates in time")
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batch.values():
                for record in records:
                    first = min(first, record.timestamp / 1000)
                    last = max(last, record.timestamp / 1000)
                seen += len(records)
    finally:
        await consumer.stop()
    return n / (last - first)


def run_peer(bootstrap: str, basis: Path, now: float, n: int, work: Path) -> float:
    env = {
        **os.environ,
        "PEER_BROKER": bootstrap,
        "PEER_BASIS": str(basis),
        "PEER_WINDOW": "30d",
        "PEER_LAG": "7d",
        "PEER_NOW": repr(now),
        "PEER_APP_ID": f"peer-{time.time_ns()}",
        "PEER_DATADIR": str(work / f"peer-{time.time_ns()}"),
        "PEER_TOPIC": "interactions",
        "PEER_UPDATES": "peer-updates",
        "PEER_WEB_PORT": str(free_port()),
    }
    log = (work / "peer.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.faust_peer_app", "worker", "-l", "warn"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        return asyncio.run(count_updates(bootstrap, "peer-updates", n, time.monotonic() + 1800))
    finally:
        process.terminate()
        process.wait(60)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="lte worker vs a naive Faust peer.")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "peer.json")
    args = parser.parse_args()
    events, repeats = (5_000, 1) if args.quick else (30_000, args.repeats)
    spec = SyntheticSpec(
        users=3_000, items=2_000, dim=64, events=events, days=45, start=1_700_000_000.0
    )
    now = spec.start + spec.days * 86400 + 1
    workers, peers = [], []
    with tempfile.TemporaryDirectory(prefix="lte-peer-") as tmp:
        work = Path(tmp)
        basis = SyntheticStream(spec).catalog.basis().save(work / "basis")
        for r in range(repeats):
            with EmbeddedBroker(log_path=work / "tansu.log") as broker:
                asyncio.run(create_topic(broker.bootstrap, "interactions", 4))
                asyncio.run(produce(broker.bootstrap, SyntheticStream(spec)))
                workers.append(
                    run_worker(
                        broker.bootstrap,
                        basis,
                        work / f"state-{r}",
                        now=now,
                        n=events,
                        log=work / "worker.log",
                    ).events_s
                )
                peers.append(run_peer(broker.bootstrap, basis, now, events, work))
            print(f"  run {r + 1}: worker {workers[-1]:,.0f}/s peer {peers[-1]:,.0f}/s", flush=True)
    row = {
        "events": events,
        "d": 64,
        "worker_ev_s": round(statistics.median(workers)),
        "peer_ev_s": round(statistics.median(peers)),
        "ratio": round(statistics.median(w / p for w, p in zip(workers, peers, strict=True)), 1),
    }
    print(table([row]))
    save_results(
        args.out,
        {
            "benchmark": "peer",
            "machine": machine_info(),
            "repeats": repeats,
            "quick": args.quick,
            "rows": [row],
            "runs": {"worker": workers, "peer": peers},
        },
    )


if __name__ == "__main__":
    main()
