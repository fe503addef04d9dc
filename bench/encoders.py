"""Encoder throughput: what an ``ae`` encoder costs the worker compared with ``mean``.

All encoders read the same :class:`~lte_core.summary.WindowSummary` batches (the worker
hands one per flush), so the only difference measured is the encoder itself. Two paths:

* ``encode``: ``encoder.encode(summary)`` alone, users/s;
* ``emit``: :class:`streams.updates.UpdateBuilder` building the ``lte-updates`` records of
  the batch (encode + JSON of coefficients and vector), the worker's real per-flush work
  after the window state is updated, users/s.

Bases: the ML-100K identity basis (d = K = 384; random unit vectors when the data set is
absent) and a PCA basis with K = 64 of the same vectors. The AE has the default 256 hidden
units and random weights (throughput does not depend on the values). Every figure is the
median of ``--repeats`` (≥ 3, default 5) interleaved rounds in this process;
``x_mean`` is the throughput relative to ``mean`` on the same basis, batch and path. BLAS
threads are whatever the environment says; the recorded figures use one thread
(``OPENBLAS_NUM_THREADS=1``), which is steadier on a shared machine and is what one worker
process gets when several share a host. Results: ``bench/results/encoders.json``.

    OPENBLAS_NUM_THREADS=1 python -m bench.encoders            # full run (a few minutes)
    python -m bench.encoders --quick                           # smoke run
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from bench.report import machine_info, save_results, table
from lte_core.autoencoder import AutoencoderArtifact, AutoencoderEncoder, AutoencoderWeights
from lte_core.basis import BasisArtifact
from lte_core.encoders import Encoder, MeanEncoder, RecencyEncoder
from lte_core.engine import NEVER, EngineResult, EventRecords
from lte_core.summary import WindowSummary
from lte_core.window import WindowSpec
from streams.clock import Clock
from streams.updates import UpdateBuilder

DAY = 86400
ROOT = Path(__file__).resolve().parent.parent
ML_DIR = ROOT.parent / "shared" / "data" / "ml-100k"
SPEC = WindowSpec(window=365 * DAY, lag=28 * DAY, bucket=DAY)
NOW = 1_700_000_000.0


def item_vectors(rng: np.random.Generator) -> tuple[list[str], np.ndarray, str]:
    path = ML_DIR / "item_embeddings.npy"
    if path.is_file():
        ids = (ML_DIR / "item_ids.txt").read_text(encoding="utf-8").splitlines()
        return ids, np.load(path, allow_pickle=False).astype(np.float32), "ml-100k"
    v = rng.standard_normal((1682, 384)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return [str(i) for i in range(len(v))], v, "random"


def windows(rng: np.random.Generator, vectors: np.ndarray, m: int) -> WindowSummary:
    """Means of 1-400 random items, as float64 sums; decayed sums for ``recency``."""
    counts = rng.integers(1, 400, m)
    sums = np.empty((m, vectors.shape[1]))
    decayed = np.empty_like(sums)
    for i, c in enumerate(counts.tolist()):
        picked = vectors[rng.integers(0, len(vectors), c)].astype(np.float64)
        decay = rng.uniform(0.01, 1.0, c)
        sums[i] = picked.sum(axis=0)
        decayed[i] = decay @ picked
    return WindowSummary(
        sums=sums,
        weight_sums=counts.astype(np.float64),
        counts=counts.astype(np.int64),
        decayed_sums=decayed,
        decayed_weights=rng.uniform(1.0, 50.0, m),
    )


def autoencoder(basis: BasisArtifact, rng: np.random.Generator) -> AutoencoderEncoder:
    hidden = 256
    weights = AutoencoderWeights(
        hidden_weight=rng.normal(0, 0.05, (hidden, basis.d + 1)).astype(np.float32),
        hidden_bias=rng.normal(0, 0.05, hidden).astype(np.float32),
        out_weight=rng.normal(0, 0.05, (basis.k, hidden)).astype(np.float32),
        out_bias=np.zeros(basis.k, dtype=np.float32),
    )
    artifact = AutoencoderArtifact.create(weights, {"basis_version": basis.basis_version})
    return AutoencoderEncoder(artifact, basis)


def engine_result(summary: WindowSummary) -> EngineResult:
    """A flush in which every user of the batch changed (what the worker encodes)."""
    m = len(summary)
    end = np.full(m, SPEC.end_bucket(NOW), dtype=np.int64)
    return EngineResult(
        heads=[None] * m,
        put=EventRecords.empty(),
        delete=EventRecords.empty(),
        outcome=np.zeros(0, dtype=np.uint8),
        changed=np.ones(m, dtype=bool),
        summary=summary,
        end=end,
        next_change=np.full(m, NEVER, dtype=np.int64),
        prev_next_change=np.full(m, NEVER, dtype=np.int64),
        last_offset=np.zeros(m, dtype=np.int64),
    )


def users_per_second(fn: Callable[[], object], users: int, min_seconds: float) -> float:
    """Repeat ``fn`` until ``min_seconds`` have passed; one warm-up call first."""
    fn()
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return users * calls / elapsed


def interleaved_medians(
    runs: dict[tuple[str, str], Callable[[], float]], repeats: int
) -> dict[tuple[str, str], float]:
    """Median of each run over ``repeats`` rounds; every round runs each once, so load from
    other processes on a shared machine falls on all encoders alike."""
    samples: dict[tuple[str, str], list[float]] = {key: [] for key in runs}
    for _ in range(repeats):
        for key, run in runs.items():
            samples[key].append(run())
    return {key: statistics.median(values) for key, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description="Encoder throughput (mean vs recency vs ae).")
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "encoders.json")
    args = parser.parse_args()
    repeats = max(3, args.repeats)
    min_seconds = 0.05 if args.quick else 0.5
    batches = (1000,) if args.quick else (100, 1000, 10_000)
    rng = np.random.default_rng(0)
    ids, vectors, source = item_vectors(rng)
    bases = {
        "identity": BasisArtifact.build(ids, vectors, content_model=source),
        "pca64": BasisArtifact.build(ids, vectors, k=64, content_model=source),
    }
    names = [f"u{i}".encode() for i in range(max(batches))]
    rows = []
    for basis_name, basis in bases.items():
        encoders: dict[str, Encoder] = {
            "mean": MeanEncoder(basis),
            "recency:30d": RecencyEncoder(basis, 30 * DAY),
            "ae": autoencoder(basis, rng),
        }
        for m in batches:
            summary = windows(rng, vectors, m)
            result = engine_result(summary)
            runs: dict[tuple[str, str], Callable[[], float]] = {}
            for label, encoder in encoders.items():
                builder = UpdateBuilder(SPEC, encoder, basis.basis_version, Clock.create(NOW))
                encode = partial(encoder.encode, summary)
                emit = partial(builder.build, names[:m], result, NOW)
                for path, fn in (("encode", encode), ("emit", emit)):
                    runs[label, path] = partial(users_per_second, fn, m, min_seconds)
            measured = interleaved_medians(runs, repeats)
            for label in encoders:
                for path in ("encode", "emit"):
                    rate = measured[label, path]
                    rows.append(
                        {
                            "basis": basis_name,
                            "d": basis.d,
                            "k": basis.k,
                            "batch": m,
                            "path": path,
                            "encoder": label,
                            "users_s": round(rate),
                            "us_per_user": round(1e6 / rate, 2),
                            "x_mean": round(rate / measured["mean", path], 3),
                        }
                    )
            print(table(rows[-6:]), flush=True)
    print()
    print(table(rows))
    save_results(
        args.out,
        {
            "benchmark": "encoders",
            "machine": {
                **machine_info(),
                "numpy": np.__version__,
                "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
            },
            "vectors": source,
            "repeats": repeats,
            "min_seconds_per_repeat": min_seconds,
            "quick": args.quick,
            "ae_hidden": 256,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
