"""End-to-end staleness at 30 %, 70 % and 100 % of the sustained maximum (issue 14).

The real pipeline, each part its own process: the embedded broker, ``lte worker`` (wall
clock, lag 0, 1 s buckets, Avro updates, d = 64), ``lte refresher`` into a real
``redis-server`` (AOF, ``appendfsync always``). Events are stamped 2 s in the past so each one
is in the window when it arrives.

1. **Sustained maximum**: a backlog of 3 s at 20,000 events/s (more than the pipeline takes);
   the figure is the events the worker applied divided by the time until the whole pipeline
   had drained it (every produced event applied, both consumer lags at 0, every emitted update
   accounted for by the refresher), so it is the rate the pipeline *keeps up with*, not the
   producer's.
2. **Phases**: events at 30 %, 70 % and 100 % of that maximum for ``--seconds`` each, the
   three rates interleaved, ``--repeats`` times; each phase drains before the next.

Staleness is the refresher's ``lte_staleness_seconds`` (store write acknowledged minus
``due_at``: the broker timestamp of the earliest event that moved the window, i.e. when the
event was produced), read as the histogram's delta over the phase; the worker's share is
``lte_update_delay_seconds`` (update emitted minus ``due_at``). Each row is the median over
the repeats of each phase's p50 / p99. Results: ``bench/results/staleness.json``.

    nice -n 10 python -m bench.staleness [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from bench.live_load import produce_for, ready, wait_for
from bench.report import machine_info, save_results, table
from lte_runtime.embedded_broker import EmbeddedBroker
from lte_runtime.metrics_scrape import Samples, buckets, quantile, scrape, total
from lte_runtime.ports import free_port
from lte_runtime.redis_server import RedisServer
from lte_runtime.supervisor import Supervisor
from offline.synthetic import SyntheticSpec, SyntheticStream

ROOT = Path(__file__).resolve().parent.parent
FRACTIONS = (0.3, 0.7, 1.0)
BURST_SECONDS = 3.0
BURST_RATE = 20_000.0


def delta_quantiles(before: Samples, after: Samples, name: str) -> tuple[float, float, float]:
    """(count, p50 s, p99 s) of a histogram's observations between two scrapes."""
    b0 = dict(buckets(before, name))
    delta = [(le, c - b0.get(le, 0.0)) for le, c in buckets(after, name)]
    if not delta or delta[-1][1] <= 0:
        return 0.0, float("nan"), float("nan")
    return delta[-1][1], quantile(delta, 0.5), quantile(delta, 0.99)


def pipeline_args(
    broker: str, basis: Path, work: Path, *, wport: int, rport: int, redis: str
) -> dict[str, list[str]]:
    common = ["--broker", broker, "--session-timeout-ms", "6000", "--log-level", "warning"]
    return {
        "worker": [
            "worker", *common, "--basis", str(basis), "--window", "1d", "--lag", "0",
            "--bucket", "1s", "--state-dir", str(work / "state"), "--metrics-port", str(wport),
        ],
        "refresher": ["refresher", *common, "--store", redis, "--metrics-port", str(rport)],
    }  # fmt: skip


def run(work: Path, *, seconds: float, users: int, repeats: int) -> dict[str, object]:
    stream = SyntheticStream(SyntheticSpec(users=users, items=5000, dim=64, events=1))
    basis = stream.catalog.basis().save(work / "basis")
    supervisor = Supervisor()
    wport, rport = free_port(), free_port()
    with (
        EmbeddedBroker(log_path=work / "tansu.log") as broker,
        RedisServer(work / "redis") as redis,
    ):
        try:
            args = pipeline_args(
                broker.bootstrap, basis, work, wport=wport, rport=rport, redis=redis.url
            )
            for name, argv in args.items():
                supervisor.start(name, argv, work / f"{name}.log")
            wait_for(lambda: ready(wport) and ready(rport), 120, "worker and refresher")

            def metrics() -> tuple[Samples, Samples]:
                return (
                    scrape(f"http://127.0.0.1:{wport}/metrics"),
                    scrape(f"http://127.0.0.1:{rport}/metrics"),
                )

            produced = 0

            def drained() -> bool:
                # every produced event applied first: the lag gauges read 0 before the first
                # fetch of a backlog has updated them
                w, r = metrics()
                return (
                    total(w, "lte_events_total") >= produced
                    and total(w, "lte_consumer_lag") == 0
                    and total(r, "lte_consumer_lag") == 0
                    and total(r, "lte_store_writes_total") >= total(w, "lte_updates_emitted_total")
                )

            # warm-up: connections, topic creation, first group join of both consumers
            produced += asyncio.run(produce_for(broker.bootstrap, 2.0, 500.0, users))
            wait_for(drained, 300, "the warm-up to drain")
            w0 = total(metrics()[0], "lte_events_total")
            started = time.perf_counter()
            # a backlog of BURST_SECONDS at BURST_RATE (more than the pipeline takes), timed
            # until the pipeline has drained it
            produced += asyncio.run(produce_for(broker.bootstrap, BURST_SECONDS, BURST_RATE, users))
            wait_for(drained, 900, "the burst to drain")
            elapsed = time.perf_counter() - started
            maximum = (total(metrics()[0], "lte_events_total") - w0) / elapsed
            print(f"  sustained maximum ≈ {maximum:,.0f} events/s ({elapsed:.1f} s)", flush=True)
            runs: dict[float, list[dict[str, float]]] = {f: [] for f in FRACTIONS}
            for _ in range(repeats):
                for fraction in FRACTIONS:
                    rate = fraction * maximum
                    w_before, r_before = metrics()
                    sent = asyncio.run(produce_for(broker.bootstrap, seconds, rate, users))
                    produced += sent
                    wait_for(drained, 900, f"the {rate:.0f}/s phase to drain")
                    w_after, r_after = metrics()
                    n, p50, p99 = delta_quantiles(r_before, r_after, "lte_staleness_seconds")
                    _, w50, w99 = delta_quantiles(w_before, w_after, "lte_update_delay_seconds")
                    run_row = {
                        "rate_sent": sent / seconds,
                        "updates": n,
                        "p50_ms": p50 * 1000,
                        "p99_ms": p99 * 1000,
                        "worker_p50_ms": w50 * 1000,
                        "worker_p99_ms": w99 * 1000,
                    }
                    runs[fraction].append(run_row)
                    print(f"  {fraction:.0%}: {run_row}", flush=True)
            rows = [
                {
                    "load": f"{fraction:.0%} of max",
                    "rate_target": round(fraction * maximum),
                    **{
                        key: round(statistics.median(r[key] for r in runs[fraction]), 1)
                        for key in runs[fraction][0]
                    },
                }
                for fraction in FRACTIONS
            ]
            return {"sustained_max_events_per_s": round(maximum), "rows": rows, "runs": runs}
        finally:
            supervisor.stop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description="End-to-end staleness at 30/70/100% of max.")
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per phase")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "staleness.json")
    args = parser.parse_args()
    seconds = args.seconds or (4.0 if args.quick else 15.0)
    repeats = 1 if args.quick else args.repeats
    users = 10_000 if args.quick else args.users
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    with tempfile.TemporaryDirectory(prefix="lte-staleness-") as tmp:
        result = run(Path(tmp), seconds=seconds, users=users, repeats=repeats)
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    print()
    print(f"sustained maximum {result['sustained_max_events_per_s']:,} events/s")
    print(table(result["rows"]))  # type: ignore[arg-type]
    save_results(
        args.out,
        {
            "benchmark": "staleness",
            "machine": {
                **machine_info(),
                "loadavg_before": load_before,
                "loadavg_after": load_after,
            },
            "quick": args.quick,
            "seconds_per_phase": seconds,
            "repeats": repeats,
            "users": users,
            **result,
        },
    )


if __name__ == "__main__":
    main()
