"""Per-event cost against window length (7d, 90d, 365d, 730d): it should stay flat.

The worker's own state path — validation excluded, RocksDB included: ``WindowEngine`` over a
real ``WindowStore``, update records built, mutations committed — in steady state: every user
already holds a full window (one event per user-day), so events enter and leave at the same
rate while the measured tail advances the clock day by day. Each window length is measured
``--repeats`` times, interleaved, and the table gives medians and the ratio to 7d.
Results: ``bench/results/window_length.json``.

    python -m bench.window_length [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.report import machine_info, save_results, table
from lte_core.basis import BasisArtifact
from lte_core.encoders import MeanEncoder
from lte_core.engine import EventColumns, WindowEngine
from lte_core.window import WindowSpec
from streams.clock import Clock
from streams.updates import UpdateBuilder
from streams.window_store import WindowStore

ROOT = Path(__file__).resolve().parent.parent
DAY = 86400
T0 = 1_600_000_000.0


def _columns(
    users: np.ndarray, ts: np.ndarray, items: np.ndarray, first_offset: int
) -> tuple[list[bytes], EventColumns]:
    order = np.lexsort((ts, users))
    users, ts, items = users[order], ts[order], items[order]
    heads = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    return [f"user-{u:07d}".encode() for u in users[heads].tolist()], EventColumns(
        seg=np.r_[heads, len(users)].astype(np.int64),
        items=items.astype(np.uint32),
        ts=ts,
        weights=np.ones(len(users), dtype=np.float32),
        offsets=first_offset + np.arange(len(users), dtype=np.int64),
    )


def run(window_days: int, users: int, tail: int, work: Path, d: int = 64) -> float:
    rng = np.random.default_rng(window_days)
    vectors = rng.standard_normal((5000, d)).astype(np.float32)
    basis = BasisArtifact.build([str(i) for i in range(5000)], vectors)
    spec = WindowSpec(window=window_days * DAY, lag=0, bucket=DAY)
    engine = WindowEngine(spec, vectors)
    builder = UpdateBuilder(spec, MeanEncoder(basis), basis.basis_version, Clock.create(None))
    store = WindowStore(work / f"w{window_days}-{time.time_ns()}", wal=False)
    now = T0 + window_days * DAY
    offset = 0
    # Warm-up: one event per user-day over the whole window, written in user chunks.
    for lo in range(0, users, 500):
        block = np.arange(lo, min(lo + 500, users))
        days = np.arange(window_days)
        u = np.repeat(block, window_days)
        ts = T0 + np.tile(days, len(block)) * DAY + rng.uniform(0, DAY, len(u))
        keys, cols = _columns(u, ts, rng.integers(0, 5000, len(u)), offset)
        offset += len(u)
        write = store.begin()
        write.engine_result(keys, engine.process(store, keys, cols, now))
        write.commit()
    # Tail: the stream goes on, one event per user-day on average, clock moving with it.
    per_batch = 5000
    elapsed = 0.0
    for _ in range(0, tail, per_batch):
        u = rng.integers(0, users, per_batch)
        ts = now + np.sort(rng.uniform(0, per_batch / users * DAY, per_batch))
        now = float(ts[-1])
        keys, cols = _columns(u, ts, rng.integers(0, 5000, per_batch), offset)
        offset += per_batch
        started = time.perf_counter()
        result = engine.process(store, keys, cols, now)
        builder.build(keys, result, now)
        write = store.begin()
        write.engine_result(keys, result)
        write.commit()
        elapsed += time.perf_counter() - started
    store.close()
    return elapsed / tail * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description="Per-event cost vs window length.")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "window_length.json"
    )
    args = parser.parse_args()
    users, tail, repeats = (300, 20_000, 1) if args.quick else (2_000, 100_000, args.repeats)
    windows = (7, 90, 365, 730)
    runs: dict[int, list[float]] = {w: [] for w in windows}
    with tempfile.TemporaryDirectory(prefix="lte-window-") as tmp:
        for r in range(repeats):
            for w in windows:
                runs[w].append(run(w, users, tail, Path(tmp)))
                print(f"  repeat {r + 1} window {w}d: {runs[w][-1]:.2f} us/event", flush=True)
    base = statistics.median(runs[7])
    rows = [
        {
            "window_days": w,
            "events_per_user": w,
            "us_per_event": round(statistics.median(v), 2),
            "vs_7d": round(statistics.median(v) / base, 2),
        }
        for w, v in runs.items()
    ]
    print(table(rows))
    save_results(
        args.out,
        {
            "benchmark": "window_length",
            "machine": machine_info(),
            "users": users,
            "tail_events": tail,
            "repeats": repeats,
            "quick": args.quick,
            "rows": rows,
            "runs": {str(k): v for k, v in runs.items()},
        },
    )


if __name__ == "__main__":
    main()
