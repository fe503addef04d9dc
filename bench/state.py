"""State size on disk: RocksDB bytes per user against events in the window, for d=64/384.

Users are written through the worker's own engine and RocksDB store (``WindowStore``), the
store is flushed and fully compacted, and the SST bytes are divided by the users. The
documented model is ``head + e·n``: ``head = 64 + 8·d`` bytes per user plus ``e`` bytes per
stored event; the table shows the measured bytes, the model with the fitted ``e``, and ``e``.
Results: ``bench/results/state.json``.

    python -m bench.state [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from bench.report import machine_info, save_results, table
from lte_core.engine import EventColumns, WindowEngine
from lte_core.head import head_bytes
from lte_core.window import WindowSpec
from streams.window_store import EVENT, HEAD, WindowStore

ROOT = Path(__file__).resolve().parent.parent
DAY = 86400


def measure(d: int, n: int, users: int, work: Path) -> dict[str, object]:
    rng = np.random.default_rng(d * 7919 + n)
    vectors = rng.standard_normal((5000, d)).astype(np.float32)
    spec = WindowSpec(window=365 * DAY, lag=0, bucket=DAY)
    engine = WindowEngine(spec, vectors)
    now = 1_700_000_000.0
    store = WindowStore(work / f"d{d}-n{n}", wal=False)
    offset = 0
    per_call = max(1, 20_000 // n)
    for lo in range(0, users, per_call):
        keys = [f"user-{u:08d}".encode() for u in range(lo, min(lo + per_call, users))]
        total = len(keys) * n
        seg = np.arange(len(keys) + 1, dtype=np.int64) * n
        cols = EventColumns(
            seg=seg,
            items=rng.integers(0, 5000, total).astype(np.uint32),
            ts=np.sort(now - rng.uniform(1, 360 * DAY, total)),
            weights=np.ones(total, dtype=np.float32),
            offsets=np.arange(offset, offset + total, dtype=np.int64),
        )
        offset += total
        result = engine.process(store, keys, cols, now)
        write = store.begin()
        write.engine_result(keys, result)
        write.commit()
    store.compact()
    assert store.count_keys(HEAD) == users
    assert store.count_keys(EVENT) == users * n
    disk = store.disk_bytes()
    store.close()
    per_user = disk / users
    head = head_bytes(d, decayed=False)
    per_event = (per_user - head) / n
    return {
        "d": d,
        "events_per_user": n,
        "users": users,
        "bytes_per_user": round(per_user),
        "head_bytes": head,
        "bytes_per_event": round(per_event, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="RocksDB bytes per user vs window size.")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "state.json")
    args = parser.parse_args()
    users = 500 if args.quick else 5_000
    rows = []
    with tempfile.TemporaryDirectory(prefix="lte-state-") as tmp:
        for d in (64, 384):
            for n in (10, 100, 1000):
                rows.append(measure(d, n, users if n < 1000 else users // 5, Path(tmp)))
                print(table(rows[-1:]), flush=True)
    print()
    print(table(rows))
    save_results(
        args.out,
        {
            "benchmark": "state",
            "machine": machine_info(),
            "quick": args.quick,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
