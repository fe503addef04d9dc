"""Point-in-time LTEs (``offline.snapshot.point_in_time``) against a naive per-pair recompute.

A generated log (default 10^7 events, 10^5 users, 20,000 items, d=64, three years; Zipf item
popularity) and uniformly random ``(user, t)`` pairs (default 10^6; 1% of users unknown to
the log) over the log's span, window 365d, lag 28d, bucket 1d, encoder ``mean`` on the
identity basis. Measured in one process:

* ``snapshot``: :func:`~offline.snapshot.streamed` for all pairs, end to end (partitioning
  the log by user -- string ids included --, answering block by block, and reading every
  row back in input order into a discarding sink), median of ``--repeats``, in wall time and
  in this process's CPU time (on a shared machine the wall time includes waiting for a
  core); the partition pass alone is timed too;
* ``naive``: the baseline -- per pair, the user's events (the log pre-grouped by user,
  grouping not timed) filtered to the window and averaged from scratch, then encoded -- on a
  random subsample of ``--naive-pairs`` pairs, median of ``--repeats``, extrapolated to
  pairs/s (said in the output);
* the answers of both on the subsample, which must agree within 1e-5;
* memory: peak RSS growth of the snapshot (``VmHWM`` reset before it, so generating the log
  does not mask it) over the RSS with the log loaded and the engine compiled, and peak
  anonymous RSS growth (``RssAnon``, sampled), beside the sizes it is made of (one block's
  heads, spilled log and index, answers; one output chunk; the rest is "other");
* writing the result as parquet through the chunks (``offline.snapshot_files``), for scale,
  with its own peak RSS growth.

Results: ``bench/results/snapshot.json``.

    nice -n 10 python -m bench.snapshot            # full size (minutes, ~5 GB peak: the log)
    python -m bench.snapshot --quick               # smoke run
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.report import machine_info, save_results, table
from lte_core.basis import BasisArtifact
from lte_core.encoders import EncoderSpec, build_encoder
from lte_core.head import head_bytes
from lte_core.summary import WindowSummary
from lte_core.window import WindowSpec
from offline import snapshot as snapshot_module
from offline.datasets import InteractionLog
from offline.snapshot import _partition, streamed
from offline.snapshot_files import write_snapshot

DAY = 86400
RESULTS = Path(__file__).resolve().parent / "results"
SPEC = WindowSpec(window=365 * DAY, lag=28 * DAY, bucket=DAY)
T0 = 1_600_000_000.0


def rss_mb() -> float:
    """Current resident set size (Linux /proc), MB."""
    with Path("/proc/self/statm").open() as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def generate(
    args: argparse.Namespace,
) -> tuple[BasisArtifact, InteractionLog, npt.NDArray[np.str_], npt.NDArray[np.float64]]:
    events, users, items, d, pairs = args.events, args.users, args.items, args.d, args.pairs
    rng = np.random.default_rng(args.seed)
    vectors = rng.standard_normal((items, d)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    basis = BasisArtifact.build([f"i{i}" for i in range(items)], vectors)
    span = 3 * 365 * DAY
    popularity = 1.0 / np.arange(1, items + 1) ** 0.8
    popularity /= popularity.sum()
    log = InteractionLog(
        user_ids=np.char.add("u", rng.integers(0, users, events).astype(str)),
        item_ids=np.char.add("i", rng.choice(items, events, p=popularity).astype(str)),
        ts=T0 + np.floor(rng.uniform(0, span, events)),
        weights=np.ones(events),
    )
    pair_users = np.char.add("u", rng.integers(0, int(users * 1.01), pairs).astype(str))
    pair_ts = T0 + rng.uniform(0, span + 30 * DAY, pairs)
    return basis, log, pair_users, pair_ts


def naive(
    log: InteractionLog,
    basis: BasisArtifact,
    encoder: EncoderSpec,
    pair_users: npt.NDArray[np.str_],
    pair_ts: npt.NDArray[np.float64],
) -> tuple[float, npt.NDArray[np.float32]]:
    """Seconds for the pairs, and their vectors (NaN rows for empty windows)."""
    rows = basis.rows_of(log.item_ids.tolist())
    order = np.argsort(log.user_ids, kind="stable")
    users = log.user_ids[order]
    cuts = np.flatnonzero(np.r_[True, users[1:] != users[:-1], True])
    by_user = {
        str(users[lo]): order[lo:hi]
        for lo, hi in zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True)
    }
    built = build_encoder(encoder, basis)
    out = np.full((len(pair_users), basis.d), np.nan, dtype=np.float32)
    started = time.perf_counter()
    for j, (user, clock) in enumerate(zip(pair_users.tolist(), pair_ts.tolist(), strict=True)):
        mine = by_user.get(user)
        if mine is None:
            continue
        end = SPEC.end_bucket(clock)
        buckets = SPEC.bucket_of_array(log.ts[mine])
        inside = mine[(buckets >= end - SPEC.n_buckets) & (buckets < end)]
        if len(inside) == 0:
            continue
        w = log.weights[inside]
        summary = WindowSummary(
            sums=(w[:, None] * basis.item_vectors[rows[inside]].astype(np.float64)).sum(0)[None],
            weight_sums=np.array([w.sum()]),
            counts=np.array([len(inside)], dtype=np.int64),
        )
        out[j] = built.encode(summary).vectors[0]
    return time.perf_counter() - started, out


class _PeakMemory:
    """Peak RSS (``VmHWM``, reset through ``/proc/self/clear_refs`` so the log's
    generation does not mask it) and peak anonymous RSS (``RssAnon``, sampled every 5 ms
    by a thread: the kernel keeps no high-water mark of it) over a ``with`` block, MB."""

    def __init__(self) -> None:
        self.peak_mb = 0.0
        self.peak_anon_mb = 0.0
        self._stop = threading.Event()

    def __enter__(self) -> _PeakMemory:
        Path("/proc/self/clear_refs").write_text("5\n", encoding="ascii")
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak_anon_mb = max(self.peak_anon_mb, _status_mb("RssAnon"))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_anon_mb = max(self.peak_anon_mb, _status_mb("RssAnon"))
        self.peak_mb = _status_mb("VmHWM")


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def streamed_run(
    log: InteractionLog,
    pair_users: npt.NDArray[np.str_],
    pair_ts: npt.NDArray[np.float64],
    sample: npt.NDArray[np.int64],
    call: dict[str, Any],
) -> tuple[int, int, npt.NDArray[np.float32], int]:
    """The streamed snapshot consumed by a discarding sink (only the ``sample`` rows kept,
    for the comparison with the naive recompute): rows, empty rows, sampled vectors,
    blocks."""
    kept = np.empty((len(sample), call["basis"].d), dtype=np.float32)
    rows = empty = 0
    with streamed(log, pair_users, pair_ts, **call) as stream:
        for chunk in stream.chunks():
            lo, hi = rows, rows + len(chunk)
            first, last = np.searchsorted(sample, [lo, hi]).tolist()
            kept[first:last] = chunk.vectors[sample[first:last] - lo]
            empty += int(np.count_nonzero(chunk.n_events == 0))
            rows = hi
        blocks = stream.blocks
    return rows, empty, kept, blocks


def run(args: argparse.Namespace) -> dict[str, Any]:
    basis, log, pair_users, pair_ts = generate(args)
    encoder = EncoderSpec.parse("mean")
    call = {"basis": basis, "window": SPEC, "encoder": encoder}
    import pyarrow.compute  # noqa: F401, PLC0415 - its libraries are not the snapshot's memory

    rng = np.random.default_rng(args.seed + 1)
    sample = np.sort(
        rng.choice(len(pair_users), min(args.naive_pairs, len(pair_users)), replace=False)
    )
    # warm: numba compiles the engine's kernels once per process (not the snapshot's cost)
    streamed_run(log, pair_users[:1000], pair_ts[:1000], np.arange(10), call)
    loaded_rss = rss_mb()
    loaded_anon = _status_mb("RssAnon")
    times, cpu_times, partition_times, peaks, anon_peaks = [], [], [], [], []
    got = np.empty(0, dtype=np.float32)
    rows = empty = blocks = 0
    for _ in range(args.repeats):
        with _PeakMemory() as memory:
            started, cpu = time.perf_counter(), time.process_time()
            rows, empty, got, blocks = streamed_run(log, pair_users, pair_ts, sample, call)
            times.append(time.perf_counter() - started)
            cpu_times.append(time.process_time() - cpu)
        peaks.append(memory.peak_mb - loaded_rss)
        anon_peaks.append(memory.peak_anon_mb - loaded_anon)
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            parts = _partition(
                log,
                basis,
                SPEC,
                source="bench",
                blocks=blocks,
                directory=Path(tmp),
                chunk_events=snapshot_module.CHUNK_EVENTS,
            )
            partition_times.append(time.perf_counter() - started)
            spill_bytes = sum(p.stat().st_size for p in parts.paths)
    assert rows == args.pairs

    naive_runs = [
        naive(log, basis, encoder, pair_users[sample], pair_ts[sample]) for _ in range(args.repeats)
    ]
    naive_s = statistics.median(s for s, _ in naive_runs)
    naive_vectors = naive_runs[0][1]
    same_empty = bool((np.isnan(got[:, 0]) == np.isnan(naive_vectors[:, 0])).all())
    filled = ~np.isnan(naive_vectors[:, 0])
    worst = float(np.abs(got[filled] - naive_vectors[filled]).max()) if filled.any() else 0.0

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "snapshot.parquet"
        with _PeakMemory() as parquet_memory:
            started = time.perf_counter()
            with streamed(log, pair_users, pair_ts, **call) as stream:  # type: ignore[arg-type]
                write_snapshot(out, stream.chunks())
            parquet_s = time.perf_counter() - started
        parquet_mb = out.stat().st_size / 2**20

    users_in_log = len(np.unique(log.user_ids))
    snapshot_s = statistics.median(times)
    growth = statistics.median(peaks)
    heads = users_in_log / blocks * head_bytes(args.d, decayed=False) / 2**20
    # the block's spill as read, and its index (key 8 B + item 4 B + weight 4 B per event)
    block_log = spill_bytes / blocks / 2**20 * 2
    row_bytes = snapshot_module._answer_dtype(basis).itemsize
    chunk = min(snapshot_module.CHUNK_ROWS, args.pairs) * (row_bytes + 8 * 4) / 2**20
    block_answers = args.pairs / blocks * row_bytes / 2**20
    return {
        "events": args.events,
        "users": users_in_log,
        "items": args.items,
        "d": args.d,
        "pairs": args.pairs,
        "window": SPEC.describe(),
        "repeats": args.repeats,
        "threads": snapshot_module.WORKERS,
        "blocks": blocks,
        "prefetch": snapshot_module.PREFETCH,
        "snapshot_s": round(snapshot_s, 2),
        "snapshot_pairs_s": round(args.pairs / snapshot_s),
        "snapshot_cpu_s": round(statistics.median(cpu_times), 2),
        "snapshot_pairs_per_cpu_s": round(args.pairs / statistics.median(cpu_times)),
        "partition_s": round(statistics.median(partition_times), 2),
        "naive_pairs_measured": len(sample),
        "naive_s": round(naive_s, 3),
        "naive_pairs_s_extrapolated": round(len(sample) / naive_s),
        "speedup": round((args.pairs / snapshot_s) / (len(sample) / naive_s), 1),
        "max_abs_diff_vs_naive": worst,
        "same_empty_rows_as_naive": same_empty,
        "empty_rows": empty,
        "rss_with_log_mb": round(loaded_rss),
        "peak_rss_growth_mb": round(growth),
        "peak_rss_anon_growth_mb": round(statistics.median(anon_peaks)),
        "heads_per_block_mb": round(heads, 1),
        "block_log_mb": round(block_log, 1),
        "block_answers_mb": round(block_answers, 1),
        "output_chunk_mb": round(chunk, 1),
        "pairs_ints_mb": round(args.pairs * 8 * 3 / 2**20, 1),
        "other_mb": round(growth - heads - block_log - block_answers - chunk, 1),
        "spill_bytes_per_event": round(spill_bytes / args.events, 1),
        "parquet_write_s": round(parquet_s, 2),
        "parquet_peak_rss_growth_mb": round(parquet_memory.peak_mb - loaded_rss),
        "parquet_mb": round(parquet_mb),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10^5 events, 10^4 pairs")
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--naive-pairs", type=int, default=2_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--out", type=Path, default=RESULTS / "snapshot.json")
    parser.add_argument(
        "--prefetch",
        action="store_true",
        help="read and sort the next block on a thread while one is answered",
    )
    args = parser.parse_args()
    snapshot_module.PREFETCH = args.prefetch
    if args.quick:
        args.events, args.users, args.pairs, args.naive_pairs = 100_000, 2_000, 10_000, 500
    result = run(args)
    print(table([{"measure": k, "value": v} for k, v in result.items()]))
    target = result["snapshot_pairs_s"] >= 100_000
    print(
        f"\nsnapshot {result['snapshot_pairs_s']:,} pairs/s end to end "
        f"({'meets' if target else 'misses'} the 10^5 pairs/s target); naive per-pair "
        f"recompute {result['naive_pairs_s_extrapolated']:,} pairs/s, measured on "
        f"{result['naive_pairs_measured']:,} pairs and extrapolated"
    )
    save_results(
        args.out, {"quick": args.quick, "machine": machine_info(), "rows": [result], **result}
    )


if __name__ == "__main__":
    main()
