"""Micro-benchmark of the window maths (lte_core only, no Kafka, no RocksDB).

For d=384 (ML-100K content vectors; random unit vectors when the data set is absent) and
d=64, and windows of 7d/90d/365d (lag 7d, bucket 1d, 2 events per user-day, so windows
hold ~14/180/730 events), it measures events/s of

* ``engine``: the worker's columnar engine (:class:`lte_core.engine.WindowEngine`) over the
  in-memory store, batches of 2,000 events;
* ``batch``: the one-user reference (:class:`lte_core.state.LaggedWindow`), each user's
  events of a batch applied in one call;
* ``per_event``: the reference, one ``apply`` per event;
* ``naive``: the baseline — each user's history kept, and the window mean recomputed from
  scratch for every event;

and the bytes per user of the serialised window against the documented formula. Every
figure is the median of ``--repeats`` runs in this process; ratios compare paths measured in
the same run. Results: ``bench/results/core.json``.

    python -m bench.core            # full run (a few minutes)
    python -m bench.core --quick    # smoke run
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bench.report import machine_info, save_results, table
from lte_core.engine import EventColumns, WindowEngine
from lte_core.memory_store import MemoryWindowStore
from lte_core.state import LaggedWindow, state_bytes
from lte_core.window import WindowSpec

DAY = 86400
ROOT = Path(__file__).resolve().parent.parent
ML_VECTORS = ROOT.parent / "shared" / "data" / "ml-100k" / "item_embeddings.npy"
F32 = npt.NDArray[np.float32]


def item_vectors(d: int, rng: np.random.Generator) -> F32:
    if d == 384 and ML_VECTORS.is_file():
        loaded: F32 = np.load(ML_VECTORS, allow_pickle=False)
        return loaded.astype(np.float32)
    v = rng.standard_normal((2000, d)).astype(np.float32)
    normed: F32 = v / np.linalg.norm(v, axis=1, keepdims=True)
    return normed


class Stream:
    """A warm-up history covering window + lag, then a measured tail; Zipf item popularity."""

    def __init__(self, users: int, window_days: int, n_items: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        per_day = 2
        warm_days = window_days + 7 + 1
        n_warm = users * per_day * warm_days
        t0 = 1_600_000_000.0
        self.warm_users = rng.integers(0, users, n_warm)
        self.warm_ts = np.sort(t0 + rng.uniform(0, warm_days * DAY, n_warm))
        pop = 1.0 / np.arange(1, n_items + 1) ** 0.8
        pop /= pop.sum()
        self.warm_items = rng.choice(n_items, n_warm, p=pop)
        self.now = t0 + warm_days * DAY
        n_tail = 200_000
        self.users = rng.integers(0, users, n_tail)
        self.ts = self.now + np.cumsum(rng.exponential(DAY / (users * per_day), n_tail))
        self.items = rng.choice(n_items, n_tail, p=pop)

    def references(self, spec: WindowSpec, vectors: F32) -> dict[int, LaggedWindow]:
        by_user: dict[int, list[int]] = defaultdict(list)
        for i, u in enumerate(self.warm_users.tolist()):
            by_user[u].append(i)
        states = {}
        for u, rows in by_user.items():
            idx = np.asarray(rows)
            s = LaggedWindow(spec, vectors.shape[1])
            s.apply(self.warm_items[idx], self.warm_ts[idx], np.ones(len(idx)), vectors, self.now)
            states[u] = s
        return states

    def engine_store(self, engine: WindowEngine) -> MemoryWindowStore:
        store = MemoryWindowStore()
        order = np.argsort(self.warm_users, kind="stable")
        users, cols = _group(
            self.warm_users[order],
            self.warm_items[order],
            self.warm_ts[order],
            np.arange(len(order)),
        )
        keys = [str(u).encode() for u in users]
        store.commit(keys, engine.process(store, keys, cols, self.now))
        return store

    def batches(self, n: int, size: int) -> Iterator[tuple[list[int], EventColumns, float]]:
        """The tail in batches grouped by user, the way the worker sees them."""
        for lo in range(0, n, size):
            hi = min(lo + size, n)
            order = np.argsort(self.users[lo:hi], kind="stable")
            users, cols = _group(
                self.users[lo:hi][order],
                self.items[lo:hi][order],
                self.ts[lo:hi][order],
                10**9 + lo + order,
            )
            yield users, cols, float(self.ts[hi - 1])


def _group(
    users: npt.NDArray[np.int64],
    items: npt.NDArray[np.int64],
    ts: npt.NDArray[np.float64],
    offsets: npt.NDArray[np.int64],
) -> tuple[list[int], EventColumns]:
    heads = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    return users[heads].tolist(), EventColumns(
        seg=np.r_[heads, len(users)].astype(np.int64),
        items=items.astype(np.uint32),
        ts=ts,
        weights=np.ones(len(users), dtype=np.float32),
        offsets=offsets.astype(np.int64),
    )


def run_engine(stream: Stream, spec: WindowSpec, vectors: F32, n: int) -> float:
    engine = WindowEngine(spec, vectors)
    store = stream.engine_store(engine)
    work = list(stream.batches(n, 2000))
    start = time.perf_counter()
    for users, cols, now in work:
        keys = [str(u).encode() for u in users]
        store.commit(keys, engine.process(store, keys, cols, now))
    return n / (time.perf_counter() - start)


def run_batch(stream: Stream, spec: WindowSpec, vectors: F32, n: int) -> float:
    states = stream.references(spec, vectors)
    work = list(stream.batches(n, 2000))
    start = time.perf_counter()
    for users, cols, now in work:
        for i, u in enumerate(users):
            lo, hi = cols.seg[i], cols.seg[i + 1]
            states[u].apply(cols.items[lo:hi], cols.ts[lo:hi], cols.weights[lo:hi], vectors, now)
    return n / (time.perf_counter() - start)


def run_per_event(stream: Stream, spec: WindowSpec, vectors: F32, n: int) -> float:
    states = stream.references(spec, vectors)
    users, items, ts = stream.users.tolist(), stream.items.tolist(), stream.ts.tolist()
    start = time.perf_counter()
    for i in range(n):
        states[users[i]].apply([items[i]], [ts[i]], [1.0], vectors, ts[i])
    return n / (time.perf_counter() - start)


def run_naive(stream: Stream, spec: WindowSpec, vectors: F32, n: int) -> float:
    """Recompute the window mean from the whole history at every event."""
    history: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for u, i, t in zip(
        stream.warm_users.tolist(), stream.warm_items.tolist(), stream.warm_ts.tolist(), strict=True
    ):
        history[u].append((i, t))
    users, items, ts = stream.users.tolist(), stream.items.tolist(), stream.ts.tolist()
    start = time.perf_counter()
    for i in range(n):
        hist = history[users[i]]
        hist.append((items[i], ts[i]))
        lo = spec.start_bucket(ts[i]) * spec.bucket
        hi = spec.end_bucket(ts[i]) * spec.bucket
        rows = [it for it, t in hist if lo <= t < hi]
        if rows:
            vectors[rows].astype(np.float64).mean(axis=0)
    return n / (time.perf_counter() - start)


def median_of(repeats: int, fn: Callable[[], float]) -> float:
    return statistics.median(fn() for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description="Micro-benchmark of the window maths.")
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "core.json")
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    users = 200 if args.quick else 1000
    n_engine, n_single, n_naive = (6_000, 1_000, 200) if args.quick else (100_000, 20_000, 2_000)
    rng = np.random.default_rng(0)
    rows = []
    for d in (64, 384):
        vectors = item_vectors(d, rng)
        for window_days in (7, 90, 365):
            spec = WindowSpec(window=window_days * DAY, lag=7 * DAY, bucket=DAY)
            stream = Stream(users, window_days, len(vectors), seed=window_days)
            engine = median_of(repeats, partial(run_engine, stream, spec, vectors, n_engine))
            batch = median_of(repeats, partial(run_batch, stream, spec, vectors, n_engine))
            single = median_of(repeats, partial(run_per_event, stream, spec, vectors, n_single))
            naive = median_of(repeats, partial(run_naive, stream, spec, vectors, n_naive))
            refs = stream.references(spec, vectors)
            sizes = [len(s.to_bytes()) for s in refs.values()]
            formula = statistics.mean(
                state_bytes(d, s.n_stored, plain=s.plain) for s in refs.values()
            )
            rows.append(
                {
                    "d": d,
                    "window_days": window_days,
                    "events_stored_per_user": round(
                        statistics.mean(s.n_stored for s in refs.values()), 1
                    ),
                    "engine_ev_s": round(engine),
                    "batch_ev_s": round(batch),
                    "per_event_ev_s": round(single),
                    "naive_ev_s": round(naive),
                    "engine_x_naive": round(engine / naive, 1),
                    "per_event_x_naive": round(single / naive, 1),
                    "bytes_per_user": round(statistics.mean(sizes), 1),
                    "bytes_formula": round(formula, 1),
                }
            )
            print(table(rows[-1:]), flush=True)
    print()
    print(table(rows))
    save_results(
        args.out,
        {
            "benchmark": "core",
            "machine": machine_info(),
            "repeats": repeats,
            "users": users,
            "quick": args.quick,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
