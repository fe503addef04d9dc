"""Every benchmark, one after another, then one summary against the targets.

    python -m bench [--quick] [--only worker,staleness] [--readme]

Each benchmark runs as its own process (a crash or a timeout in one does not stop the
rest) and saves its JSON in ``bench/results/``. The summary is built from those files, so
``--summary-only`` re-renders it without running anything; ``--readme`` also writes it
between the ``bench-results`` markers of README.md. Figures from ``--quick`` runs are
marked as such: they are smoke runs, not the published numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report import table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
README = ROOT / "README.md"
BEGIN, END = "<!-- bench-results -->", "<!-- /bench-results -->"


@dataclass(frozen=True, slots=True)
class Bench:
    name: str
    args: tuple[str, ...] = ()
    quick_args: tuple[str, ...] = ("--quick",)


BENCHES = (
    Bench("core"),
    Bench("window_length"),
    Bench("state"),
    Bench("encoders"),
    Bench("peer"),
    Bench("worker"),
    Bench("runtimes"),
    Bench("serving"),
    Bench(
        "serving",
        ("--d", "64", "--out", str(RESULTS / "serving-d64.json")),
        ("--quick", "--d", "64", "--out", str(RESULTS / "serving-d64.json")),
    ),
    Bench("staleness"),
    Bench("sweep"),
    Bench("snapshot"),
    Bench("platform"),
)

Row = dict[str, str]


def run_all(selected: set[str] | None, quick: bool, timeout: float) -> list[dict[str, object]]:
    outcomes: list[dict[str, object]] = []
    for bench in BENCHES:
        if selected is not None and bench.name not in selected:
            continue
        extra = bench.quick_args if quick else bench.args
        args = [sys.executable, "-m", f"bench.{bench.name}", *extra]
        print(f"\n=== {' '.join(args[2:])}", flush=True)
        started = time.monotonic()
        try:
            code = subprocess.run(args, cwd=ROOT, timeout=timeout, check=False).returncode
        except subprocess.TimeoutExpired:
            code = -1
        outcomes.append(
            {
                "bench": " ".join(args[3:]) or bench.name,
                "exit": "timeout" if code == -1 else code,
                "minutes": round((time.monotonic() - started) / 60, 1),
            }
        )
    return outcomes


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return None
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return doc


def _mark(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _quick(doc: dict[str, Any]) -> str:
    return " (quick)" if doc.get("quick") else ""


def _n(value: float) -> str:
    return f"{value:,.0f}"


def worker_rows() -> Iterator[Row]:
    doc = load("worker")
    if doc is None:
        return
    for r in doc["rows"]:
        d, users = r["d"], r["users"]
        target = "≥ 100,000 ev/s and ≥ 0.15x limit" if d == 64 else "—"
        ok = r["worker_ev_s"] >= 100_000 and r["ratio"] >= 0.15
        yield {
            "measure": f"worker, d={d}, {users:,} users, {r['events']:,} events{_quick(doc)}",
            "figure": f"{_n(r['worker_ev_s'])} ev/s",
            "reference (same run)": f"bare consume+decode {_n(r['limit_ev_s'])} ev/s; "
            f"ratio {r['ratio']:.2f}",
            "target": target,
            "": _mark(ok) if d == 64 else "",
        }
        if "writes_per_event" in r:
            yield {
                "measure": f"RocksDB writes per event, d={d}, {users:,} users",
                "figure": f"{r['writes_per_event']:.2f} (peak RSS {r['peak_rss_mb']:,} MB)",
                "reference (same run)": "",
                "target": "≤ 0.3",
                "": _mark(r["writes_per_event"] <= 0.3),
            }


def peer_rows() -> Iterator[Row]:
    doc = load("peer")
    if doc is None:
        return
    for r in doc["rows"]:
        yield {
            "measure": f"naive Faust peer, {r['events']:,} events{_quick(doc)}",
            "figure": f"worker {r['ratio']:.0f}x the peer",
            "reference (same run)": f"worker {_n(r['worker_ev_s'])} ev/s, "
            f"peer {_n(r['peer_ev_s'])} ev/s",
            "target": "≥ 20x",
            "": _mark(r["ratio"] >= 20),
        }


def staleness_rows() -> Iterator[Row]:
    doc = load("staleness")
    if doc is None:
        return
    maximum = doc["sustained_max_events_per_s"]
    for r in doc["rows"]:
        at_70 = r["load"].startswith("70%")
        yield {
            "measure": f"staleness event → store at {r['load']} ({_n(r['rate_target'])} ev/s)"
            f"{_quick(doc)}",
            "figure": f"p50 {r['p50_ms']:,} ms, p99 {r['p99_ms']:,} ms",
            "reference (same run)": f"sustained max {_n(maximum)} ev/s; worker's share p50 "
            f"{r['worker_p50_ms']:,} ms, p99 {r['worker_p99_ms']:,} ms",
            "target": "p99 ≤ 1 s at 70% of max" if at_70 else "",
            "": _mark(r["p99_ms"] <= 1000) if at_70 else "",
        }


def sweep_rows() -> Iterator[Row]:
    doc = load("sweep")
    if doc is None:
        return
    s = doc["sweep"]
    yield {
        "measure": f"sweep of {s['silent_users']:,} silent users, in process{_quick(doc)}",
        "figure": f"{s['sweep_seconds']} s ({s['us_per_user']} µs/user)",
        "reference (same run)": f"{s['cpu_us_per_user']} µs CPU/user; applying their events "
        f"took {s['apply_seconds']} s",
        "target": "10^6 users < 15 s",
        "": _mark(s["silent_users"] >= 1_000_000 and s["sweep_seconds"] < 15),
    }


def state_rows() -> Iterator[Row]:
    doc = load("state")
    if doc is None:
        return
    for d in sorted({r["d"] for r in doc["rows"]}):
        rows = [r for r in doc["rows"] if r["d"] == d]
        per_user = ", ".join(f"n={r['events_per_user']}: {_n(r['bytes_per_user'])}" for r in rows)
        worst = max(r["bytes_per_event"] for r in rows)
        yield {
            "measure": f"state bytes per user, d={d}{_quick(doc)}",
            "figure": per_user,
            "reference (same run)": f"head {rows[0]['head_bytes']} B + ≤ {worst} B per event",
            "target": "≤ 16 B per event + O(d)",
            "": _mark(worst <= 16),
        }


def window_rows() -> Iterator[Row]:
    doc = load("window_length")
    if doc is None:
        return
    rows = {r["window_days"]: r for r in doc["rows"]}
    if 7 in rows and 730 in rows:
        ratio = rows[730]["us_per_event"] / rows[7]["us_per_event"]
        yield {
            "measure": f"per-event cost, window 730d vs 7d{_quick(doc)}",
            "figure": f"{ratio:.2f}x",
            "reference (same run)": ", ".join(
                f"{w}d {r['us_per_event']} µs" for w, r in sorted(rows.items())
            ),
            "target": "≤ 1.3x",
            "": _mark(ratio <= 1.3),
        }


def serving_rows(name: str) -> Iterator[Row]:
    doc = load(name)
    if doc is None:
        return
    d = doc["d"]
    rows = {(r["backend"], r["what"]): r for r in doc["refresher"]}
    bare = next((r for (_, what), r in rows.items() if what.startswith("bare")), None)
    json_rate = rows.get(("redis", "refresher (JSON)"))
    for (backend, what), r in rows.items():
        if not what.startswith("refresher"):
            continue
        avro_redis = backend == "redis" and what == "refresher (Avro)"
        reference = ""
        if bare is not None:
            reference = f"bare consume + pipelined SET {_n(bare['updates_s'])}/s; {r['x_bare']}x"
        if avro_redis and json_rate is not None:
            reference += f"; JSON refresher {_n(json_rate['updates_s'])}/s; {r['x_json']}x"
        met = avro_redis and r["x_bare"] >= 0.5 and r["x_json"] >= 5
        yield {
            "measure": f"{what} Kafka → {backend}, d={d}{_quick(doc)}",
            "figure": f"{_n(r['updates_s'])} updates/s",
            "reference (same run)": reference,
            "target": "≥ 0.5x bare loop and ≥ 5x JSON refresher" if avro_redis else "",
            "": _mark(met) if avro_redis else "",
        }
    for r in doc["api"]:
        single = r["what"].startswith("GET")
        reference = f"{_n(r['requests_s'])} req/s"
        if single:
            reference += (
                f"; bare aiohttp ({r['body_bytes']:,} B body) {_n(r['bare_requests_s'])} req/s, "
                f"p50 {r['bare_p50_ms']} ms, p99 {r['bare_p99_ms']} ms; {r['x_bare']}x"
            )
            if r.get("bare_redis_requests_s"):
                reference += (
                    f"; bare + one Redis GET {_n(r['bare_redis_requests_s'])} req/s, "
                    f"{r['x_bare_redis']}x"
                )
        yield {
            "measure": f"{r['what']}, redis, d={d}{_quick(doc)}",
            "figure": f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms",
            "reference (same run)": reference,
            "target": "≥ 0.6x bare req/s" if single else "",
            "": _mark(r["x_bare"] >= 0.6) if single else "",
        }


def platform_rows() -> Iterator[Row]:
    doc = load("platform")
    if doc is None:
        return
    writes = {r["path"]: r for r in doc["writes"]}
    own = writes.get("product store (Redis)")
    for path, r in writes.items():
        yield {
            "measure": f"write, {path}, d={doc['d']}{_quick(doc)}",
            "figure": f"{_n(r['updates_s'])} updates/s",
            "reference (same run)": f"{r['x_product_store']}x the product store "
            f"({_n(own['updates_s'])} updates/s)"
            if own
            else "",
            "target": "",
            "": "",
        }
    for r in doc["reads_latency"]:
        yield {
            "measure": f"read, {r['path']}, d={doc['d']}{_quick(doc)}",
            "figure": f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms",
            "reference (same run)": f"Feast {doc['feast_version']}",
            "target": "",
            "": "",
        }


def core_rows() -> Iterator[Row]:
    doc = load("core")
    if doc is None:
        return
    for r in doc["rows"]:
        yield {
            "measure": f"engine in memory, d={r['d']}, window {r['window_days']}d{_quick(doc)}",
            "figure": f"{_n(r['engine_ev_s'])} ev/s",
            "reference (same run)": f"naive recompute {_n(r['naive_ev_s'])} ev/s "
            f"({r['engine_x_naive']}x)",
            "target": "",
            "": "",
        }


def snapshot_rows() -> Iterator[Row]:
    doc = load("snapshot")
    if doc is None:
        return
    for r in doc["rows"]:
        yield {
            "measure": f"lte snapshot, {r['pairs']:,} pairs over {r['events']:,} events, "
            f"{r['users']:,} users, d={r['d']}{_quick(doc)}",
            "figure": f"{_n(r['snapshot_pairs_s'])} pairs/s (peak +{r['peak_rss_growth_mb']:,} MB)",
            "reference (same run)": "naive per-pair recompute "
            f"{_n(r['naive_pairs_s_extrapolated'])} pairs/s "
            f"({r['naive_pairs_measured']:,} pairs, extrapolated)",
            "target": "≥ 100,000 pairs/s",
            "": _mark(r["snapshot_pairs_s"] >= 100_000),
        }


SECTIONS: tuple[Callable[[], Iterator[Row]], ...] = (
    worker_rows,
    peer_rows,
    staleness_rows,
    sweep_rows,
    state_rows,
    window_rows,
    lambda: serving_rows("serving-d64"),
    lambda: serving_rows("serving"),
    platform_rows,
    core_rows,
    snapshot_rows,
)


def summary_rows() -> list[Row]:
    return [row for section in SECTIONS for row in section()]


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def markdown(rows: list[Row]) -> str:
    stamps = [
        load(p.stem)["recorded_at"]  # type: ignore[index]
        for p in RESULTS.glob("*.json")
        if p.stem != "summary"
    ]
    when = f"{min(stamps)[:10]} to {max(stamps)[:10]}" if stamps else "never"
    lines = [
        f"Recorded {when} on {machine()} (shared; every process of a run on the same cores).",
        "",
        "| measure | figure | reference (same run) | target | |",
        "|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(r[c].replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def write_readme(text: str) -> None:
    readme = README.read_text(encoding="utf-8")
    start, end = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    README.write_text(readme[:start] + "\n" + text + "\n" + readme[end:], encoding="utf-8")
    print(f"updated {README}")


def main() -> None:
    parser = argparse.ArgumentParser(description="Run every benchmark and summarise.")
    parser.add_argument("--quick", action="store_true", help="smoke runs (minutes, not hours)")
    parser.add_argument("--only", default=None, help="comma-separated benchmark names")
    parser.add_argument("--summary-only", action="store_true", help="render saved results")
    parser.add_argument("--readme", action="store_true", help="write the summary into README")
    parser.add_argument("--timeout-minutes", type=float, default=120.0, help="per benchmark")
    args = parser.parse_args()
    names = {b.name for b in BENCHES}
    selected = None if args.only is None else set(args.only.split(","))
    if selected is not None and not selected <= names:
        parser.error(f"--only: unknown {sorted(selected - names)}; known: {sorted(names)}")
    outcomes = []
    if not args.summary_only:
        outcomes = run_all(selected, args.quick, args.timeout_minutes * 60)
    rows = summary_rows()
    print()
    print(table(rows))
    text = markdown(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "summary.md").write_text(text + "\n", encoding="utf-8")
    if args.readme:
        write_readme(text)
    if outcomes:
        print()
        print(table(outcomes))
    failed = [o for o in outcomes if o["exit"] != 0]
    if failed:
        sys.exit(f"{len(failed)} benchmark(s) failed: {', '.join(str(o['bench']) for o in failed)}")


if __name__ == "__main__":
    main()
