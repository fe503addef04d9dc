"""Stream-processing runtimes on one topic, in one run: what hosting the engine in Faust
costs, and where the Python peers stand.

Each repeat starts a fresh embedded broker, produces one synthetic stream to
``interactions`` (4 partitions), then reads it with, in turn:

* ``limit``: a bare aiokafka consumer that ``orjson``-decodes every value (no processing);
* ``faust_worker``: ``lte worker`` — the Faust app of ``streams.app`` with the batch
  transport — from ready to every record through the whole emit order;
* ``quix``: Quix Streams 3.x, a stateful per-user running sum (``bench/quix_peer_app.py``);
* ``emit_bound``: no worker — a bare consumer that produces the worker's output bytes for
  each batch (updates, then changelog heads and events, each acknowledged;
  ``bench/emit_bound.py``): the ceiling the broker and aiokafka leave any worker;
* ``faust_agent``: a stock Faust agent with a table, one event at a time
  (``bench/faust_peer_app.py``), timed over its first ``--agent-events`` updates (it is two
  orders of magnitude slower; the rate is steady).

Medians of ``--repeats``; ratios are to ``limit`` and worker / quix. Results:
``bench/results/runtimes.json``. Needs the ``bench`` extra (``pip install -e .[bench]``).

    python -m bench.runtimes --quick
    python -m bench.runtimes          # 300k events, 50k users, d=64
    python -m bench.runtimes --dims 64,384 --runtimes faust_worker   # worker vs limit only
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

import orjson

from bench.emit_bound import emit_bound
from bench.peer import create_topic, run_peer
from bench.report import machine_info, save_results, table
from bench.worker import bare_consume, produce, run_worker
from lte_runtime.embedded_broker import EmbeddedBroker
from offline.synthetic import SyntheticSpec, SyntheticStream

ROOT = Path(__file__).resolve().parent.parent


def run_quix(bootstrap: str, basis: Path, n: int, work: Path) -> float:
    env = {
        **os.environ,
        "PEER_BROKER": bootstrap,
        "PEER_BASIS": str(basis),
        "PEER_EVENTS": str(n),
        "PEER_GROUP": f"quix-{time.time_ns()}",
        "PEER_STATE_DIR": str(work / f"quix-{time.time_ns()}"),
        "PEER_TOPIC": "interactions",
    }
    with (work / "quix.log").open("wb") as log:
        done = subprocess.run(
            [sys.executable, "-m", "bench.quix_peer_app"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
            timeout=1800,
            check=False,
        )
    lines = [line for line in done.stdout.decode().splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"quix peer printed no rate: {(work / 'quix.log').read_text()[-2000:]}")
    return float(orjson.loads(lines[-1])["events_s"])


RUNTIMES = ("limit", "faust_worker", "emit_bound", "quix", "faust_agent")


def main() -> None:
    parser = argparse.ArgumentParser(description="Faust worker vs limit, Quix, stock Faust.")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--agent-events", type=int, default=20_000)
    parser.add_argument(
        "--dims", default="64", help="comma-separated vector sizes, each its own stream (64,384)"
    )
    parser.add_argument(
        "--runtimes",
        default=",".join(RUNTIMES),
        help=f"comma-separated subset of {','.join(RUNTIMES)} (limit always runs)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "runtimes.json")
    args = parser.parse_args()
    events, users, agent_events, repeats = (
        (30_000, 5_000, 3_000, 1)
        if args.quick
        else (args.events, args.users, args.agent_events, args.repeats)
    )
    dims = [int(d) for d in args.dims.split(",")]
    chosen = ["limit"] + [
        name for name in args.runtimes.split(",") if name in RUNTIMES and name != "limit"
    ]
    rows: list[dict[str, object]] = []
    all_runs: dict[int, dict[str, list[float]]] = {}
    load: list[float] = []
    worker_vs_quix = None
    with tempfile.TemporaryDirectory(prefix="lte-runtimes-") as tmp:
        work = Path(tmp)
        for d in dims:
            spec = SyntheticSpec(
                users=users, items=5000, dim=d, events=events, days=45, start=1_700_000_000.0
            )
            now = spec.start + spec.days * 86400 + 1
            runs: dict[str, list[float]] = {name: [] for name in chosen}
            basis = SyntheticStream(spec).catalog.basis().save(work / f"basis-{d}")
            for r in range(repeats):
                load.append(os.getloadavg()[0])
                with EmbeddedBroker(log_path=work / "tansu.log") as broker:
                    asyncio.run(create_topic(broker.bootstrap, "interactions", 4))
                    asyncio.run(produce(broker.bootstrap, SyntheticStream(spec)))
                    runs["limit"].append(asyncio.run(bare_consume(broker.bootstrap, events)))
                    if "faust_worker" in runs:
                        worker = run_worker(
                            broker.bootstrap,
                            basis,
                            work / f"state-{d}-{r}",
                            now=now,
                            n=events,
                            log=work / "worker.log",
                        )
                        runs["faust_worker"].append(worker.events_s)
                    if "emit_bound" in runs:
                        runs["emit_bound"].append(
                            asyncio.run(emit_bound(broker.bootstrap, events, d))
                        )
                    if "quix" in runs:
                        runs["quix"].append(run_quix(broker.bootstrap, basis, events, work))
                    if "faust_agent" in runs:
                        runs["faust_agent"].append(
                            run_peer(broker.bootstrap, basis, now, agent_events, work)
                        )
                print(
                    f"  d={d} run {r + 1}: "
                    + " ".join(f"{k} {v[-1]:,.0f}/s" for k, v in runs.items()),
                    flush=True,
                )
            median = {k: statistics.median(v) for k, v in runs.items()}
            rows += [
                {
                    "d": d,
                    "runtime": name,
                    "events_s": round(median[name]),
                    "x_limit": round(median[name] / median["limit"], 3),
                    # each repeat's own ratio to the limit measured just before it
                    "x_limit_paired": round(
                        statistics.median(
                            v / lim for v, lim in zip(runs[name], runs["limit"], strict=True)
                        ),
                        3,
                    ),
                }
                for name in runs
            ]
            all_runs[d] = runs
            if "quix" in runs and "faust_worker" in runs and worker_vs_quix is None:
                worker_vs_quix = statistics.median(
                    w / q for w, q in zip(runs["faust_worker"], runs["quix"], strict=True)
                )
    print(table(rows))
    if worker_vs_quix is not None:
        print(f"faust_worker / quix (median of paired runs): {worker_vs_quix:.2f}x")
    save_results(
        args.out,
        {
            "benchmark": "runtimes",
            "machine": machine_info(),
            "repeats": repeats,
            "quick": args.quick,
            "events": events,
            "users": users,
            "d": dims[0] if len(dims) == 1 else dims,
            "partitions": 4,
            "agent_events": agent_events,
            "load_avg_1m_at_starts": [round(x, 2) for x in load],
            "rows": rows,
            "worker_vs_quix": None if worker_vs_quix is None else round(worker_vs_quix, 2),
            "runs": all_runs[dims[0]]
            if len(dims) == 1
            else {str(d): r for d, r in all_runs.items()},
        },
    )


if __name__ == "__main__":
    main()
