"""The experiment's only door to LTEs: point-in-time snapshots (``lte snapshot``'s API) on a
log re-timed by item position, and the leakage rule they must obey (DESIGN 3.5b).

Every LTE the experiment trains or evaluates on comes from :func:`point_in_time`, so the run
is also a check that training data equals what the stream serves. ML-100K needs lags and
windows counted in *items* (the median user's history spans 0 days and half of consecutive
interactions share a timestamp), so :func:`positional_log` re-times each user's events by
their ordinal position (tie-break: time, then file order) and the snapshot runs with bucket
``G = 1``, window ``W = window_items`` and lag ``L = lag_items``: the same code path as a
time-based snapshot, with positions for seconds.

# STAND-IN (issue 12): ``point_in_time`` and ``Snapshot`` below are a minimal stand-in for
# ``offline.snapshot`` with the same signature and semantics, built from the stream's own
# engine (``WindowEngine`` + ``MemoryWindowStore``) and encoders. At merge, delete everything
# between the STAND-IN markers and import ``Snapshot, point_in_time`` from
# ``offline.snapshot`` instead; nothing else in ``offline.experiment`` needs to change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lte_core.basis import BasisArtifact
from lte_core.encoders import EncoderSpec, build_encoder
from lte_core.engine import EventColumns, WindowEngine
from lte_core.errors import LTEError
from lte_core.memory_store import MemoryWindowStore
from lte_core.window import WindowSpec
from offline.datasets import InteractionLog

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


class LeakageError(LTEError):
    """An LTE window reaches into the model's input sequence (DESIGN 3.5b)."""


# ---- STAND-IN for offline.snapshot (issue 12) --------------------------------------------
@dataclass(frozen=True, slots=True)
class Snapshot:
    """Row ``i`` is the LTE the stream would have served for request ``i``."""

    basis_version: str
    encoder: str
    window: WindowSpec
    user_ids: npt.NDArray[np.str_]
    as_of: F64
    window_start: F64
    window_end: F64
    n_events: npt.NDArray[np.int64]
    weight_sum: F64
    coefficients: F32
    vectors: F32


def point_in_time(
    log: InteractionLog,
    user_ids: Sequence[str] | npt.NDArray[np.str_],
    ts: Sequence[float] | F64,
    *,
    basis: BasisArtifact,
    window: WindowSpec,
    encoder: EncoderSpec,
) -> Snapshot:
    """The LTE of each ``(user_ids[i], ts[i])``: the engine is driven through the requests in
    clock order (one clock per call, as the worker's clock only moves forward), each user's
    events are handed over in file order the first time the user is asked for, and rows are
    put back in request order."""
    users = np.asarray(user_ids, dtype=np.str_)
    clocks = np.asarray(ts, dtype=np.float64)
    if users.shape != clocks.shape:
        raise ValueError("user_ids and ts must have the same length")
    enc = build_encoder(encoder, basis)
    half_life = float(encoder.half_life) if encoder.kind == "recency" else None
    engine = WindowEngine(window, basis.item_vectors, half_life=half_life)
    store = MemoryWindowStore()
    rows = basis.rows_of(log.item_ids.tolist())
    order_in_file = np.flatnonzero(rows >= 0)
    by_user: dict[str, I64] = {}
    if len(order_in_file):
        log_users = log.user_ids[order_in_file]
        sort = np.argsort(log_users, kind="stable")
        grouped, starts = np.unique(log_users[sort], return_index=True)
        bounds = [*starts.tolist(), len(sort)]
        for j, u in enumerate(grouped.tolist()):
            by_user[u] = order_in_file[sort[bounds[j] : bounds[j + 1]]]
    n = len(users)
    k, d = basis.k, basis.d
    out_c = np.full((n, k), np.nan, dtype=np.float32)
    out_v = np.full((n, d), np.nan, dtype=np.float32)
    n_events = np.zeros(n, dtype=np.int64)
    weight_sum = np.zeros(n, dtype=np.float64)
    ends = np.array([window.end_bucket(t) for t in clocks.tolist()], dtype=np.int64)
    fed: set[str] = set()
    order = np.lexsort((np.arange(n), clocks))
    distinct, first = np.unique(clocks[order], return_index=True)
    bounds = [*first.tolist(), n]
    for j, clock in enumerate(distinct.tolist()):
        req = order[bounds[j] : bounds[j + 1]]
        names = list(dict.fromkeys(users[req].tolist()))
        keys = [u.encode() for u in names]
        per_user = [
            by_user.get(u, np.empty(0, np.int64)) if u not in fed else np.empty(0, np.int64)
            for u in names
        ]
        fed.update(names)
        seg = np.zeros(len(names) + 1, dtype=np.int64)
        np.cumsum([len(p) for p in per_user], out=seg[1:])
        idx = np.concatenate(per_user) if per_user else np.empty(0, np.int64)
        cols = EventColumns(
            seg=seg,
            items=rows[idx].astype(np.uint32),
            ts=log.ts[idx].astype(np.float64),
            weights=log.weights[idx].astype(np.float32),
            offsets=idx.astype(np.int64),
        )
        result = engine.process(store, keys, cols, clock)
        store.commit(keys, result)
        slot = {u: i for i, u in enumerate(names)}
        at = np.array([slot[u] for u in users[req].tolist()], dtype=np.int64)
        counts = result.summary.counts[at]
        n_events[req] = counts
        weight_sum[req] = np.where(counts > 0, result.summary.weight_sums[at], 0.0)
        full = counts > 0
        if full.any():
            encoded = enc.encode(result.summary.rows(at[full]))
            out_c[req[full]] = encoded.coefficients
            out_v[req[full]] = encoded.vectors
    return Snapshot(
        basis_version=basis.basis_version,
        encoder=enc.name,
        window=window,
        user_ids=users,
        as_of=clocks,
        window_start=((ends - window.n_buckets) * window.bucket).astype(np.float64),
        window_end=(ends * window.bucket).astype(np.float64),
        n_events=n_events,
        weight_sum=weight_sum,
        coefficients=out_c,
        vectors=out_v,
    )


# ---- end of STAND-IN ------------------------------------------------------------------------


def positional_log(
    user_ids: npt.NDArray[np.str_], item_ids: npt.NDArray[np.str_], position: I64
) -> InteractionLog:
    """A log whose event time is the event's ordinal position in its user's history."""
    return InteractionLog(
        user_ids=user_ids,
        item_ids=item_ids,
        ts=position.astype(np.float64),
        weights=np.ones(len(position), dtype=np.float64),
    )


@dataclass(frozen=True, slots=True)
class LTERequest:
    """Where the LTE is taken: at position ``clock`` (the first input item for a lagged LTE,
    the prediction position for an unlagged one), lag and window in items."""

    window_items: int
    lag_items: int
    encoder: EncoderSpec


def lte_features(
    log: InteractionLog,
    users: npt.NDArray[np.str_],
    clock: I64,
    first_input: I64,
    *,
    request: LTERequest,
    basis: BasisArtifact,
    allow_leak: bool = False,
) -> Snapshot:
    """Point-in-time LTEs for ``(users[i], clock[i])`` on a positional log, refused when a
    window ends after the first input position ``first_input[i]`` unless ``allow_leak``
    (the ``prefix_unlagged`` variant, which exists to show the leak)."""
    window = WindowSpec(window=request.window_items, lag=request.lag_items, bucket=1)
    snap = point_in_time(
        log, users, clock.astype(np.float64), basis=basis, window=window, encoder=request.encoder
    )
    if not allow_leak:
        check_no_leak(snap.window_end, first_input)
    return snap


def check_no_leak(window_end: F64, first_input: I64) -> None:
    """DESIGN 3.5b: the input sequence starts at or after the LTE window's end."""
    bad = np.flatnonzero(window_end > first_input.astype(np.float64))
    if len(bad):
        i = int(bad[0])
        raise LeakageError(
            f"{len(bad)} LTE window(s) overlap their input sequence (first: window ends at "
            f"position {window_end[i]:.0f}, input starts at {first_input[i]}); take lagged "
            "LTEs at the first input position"
        )
