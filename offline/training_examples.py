"""Examples for training and evaluating encoders, built from an offline interaction log with
the stream's lagged-window semantics (DESIGN 3.2).

An example is a ``(user, clock T)`` pair. Its input is the user's window at ``T`` as the
worker's state holds it: the running sums of ``w·v`` over the events with
``start <= b(ts) < end``, ``end = b(T - L)`` (:class:`~lte_core.summary.WindowSummary`, the
very structure encoders read in the stream). Its targets are the distinct items the user
interacts with in the horizon ``[s, s + H)``, where ``s`` is either the window end (for
training: the weeks the short-term model covers while the LTE stays behind the lag) or the
clock ``T`` (for evaluation: the items that come next). Items the user interacted with
before ``s`` are *seen*: they are not targets, and rankings leave them out, so no method
earns credit for recommending what the user already has.

Windows are summed from scratch at every clock rather than slid, so these examples are an
independent check of the engine as well as its offline twin.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lte_core.basis import BasisArtifact
from lte_core.duration import format_duration
from lte_core.errors import ConfigError
from lte_core.summary import WindowSummary
from lte_core.window import WindowSpec
from offline.datasets import InteractionLog

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]

TARGETS_AFTER_WINDOW = "window_end"
TARGETS_AFTER_CLOCK = "clock"
_CHUNK = 8192


@dataclass(frozen=True, slots=True)
class ExampleSpec:
    """The window the input comes from and the horizon the targets come from."""

    window: WindowSpec
    horizon: int
    targets_after: str = TARGETS_AFTER_WINDOW

    def __post_init__(self) -> None:
        if self.horizon < 1:
            raise ConfigError(f"horizon: must be at least 1s, got {self.horizon}s")
        if self.targets_after not in (TARGETS_AFTER_WINDOW, TARGETS_AFTER_CLOCK):
            raise ConfigError(
                f"targets_after: expected {TARGETS_AFTER_WINDOW!r} or {TARGETS_AFTER_CLOCK!r}"
            )

    def target_start(self, clock: float) -> float:
        if self.targets_after == TARGETS_AFTER_CLOCK:
            return float(clock)
        return float(self.window.end_bucket(clock) * self.window.bucket)

    def describe(self) -> str:
        return f"{self.window.describe()} horizon={format_duration(self.horizon)}"


@dataclass(frozen=True, slots=True)
class IndexedLog:
    """A log on basis rows, sorted by ``(user, ts)``.

    Weights are rounded through float32 because that is how the stream stores them, so the
    sums here are made of the same terms as the worker's. Events whose item the basis does
    not know are dropped and counted (the worker dead-letters them as ``unknown_item``).
    """

    user_ids: npt.NDArray[np.str_]
    user: I64
    item: I64
    ts: F64
    weight: F64
    n_items: int
    unknown_items: int = 0

    @classmethod
    def from_log(cls, log: InteractionLog, basis: BasisArtifact) -> IndexedLog:
        rows = basis.rows_of(log.item_ids.tolist())
        known = rows >= 0
        user_ids, user = np.unique(log.user_ids[known], return_inverse=True)
        ts = log.ts[known].astype(np.float64)
        order = np.lexsort((ts, user))
        return cls(
            user_ids=user_ids,
            user=user.astype(np.int64)[order],
            item=rows[known][order],
            ts=ts[order],
            weight=log.weights[known].astype(np.float32).astype(np.float64)[order],
            n_items=basis.n_items,
            unknown_items=int(np.count_nonzero(~known)),
        )

    def __len__(self) -> int:
        return len(self.ts)

    def before(self, t: float) -> IndexedLog:
        """Only the events with ``ts < t``: what was known at time ``t``."""
        keep = self.ts < t
        return IndexedLog(
            user_ids=self.user_ids,
            user=self.user[keep],
            item=self.item[keep],
            ts=self.ts[keep],
            weight=self.weight[keep],
            n_items=self.n_items,
            unknown_items=self.unknown_items,
        )

    @property
    def first_ts(self) -> float:
        return float(self.ts.min())

    @property
    def last_ts(self) -> float:
        return float(self.ts.max())


@dataclass(frozen=True, slots=True)
class Ragged:
    """Variable-length integer rows: row ``i`` is ``values[seg[i]:seg[i + 1]]``."""

    seg: I64
    values: I64

    def __len__(self) -> int:
        return len(self.seg) - 1

    def row(self, i: int) -> I64:
        return self.values[self.seg[i] : self.seg[i + 1]]

    def lengths(self) -> I64:
        return np.diff(self.seg)

    def owners(self) -> I64:
        """For every value, the row it belongs to."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.lengths())

    def take(self, idx: I64) -> Ragged:
        lengths = self.lengths()[idx]
        seg = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lengths, out=seg[1:])
        if len(idx) == 0 or seg[-1] == 0:
            return Ragged(seg, np.empty(0, dtype=np.int64))
        starts = self.seg[idx]
        offsets = np.arange(seg[-1], dtype=np.int64) - np.repeat(seg[:-1], lengths)
        return Ragged(seg, self.values[np.repeat(starts, lengths) + offsets])

    @classmethod
    def concat(cls, parts: Sequence[Ragged]) -> Ragged:
        if not parts:
            return cls(np.zeros(1, dtype=np.int64), np.empty(0, dtype=np.int64))
        lengths = np.concatenate([p.lengths() for p in parts])
        seg = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=seg[1:])
        return cls(seg, np.concatenate([p.values for p in parts]))


@dataclass(frozen=True, slots=True)
class Examples:
    """Row ``i``: user ``user[i]`` (an index into the log's ``user_ids``) at ``clock[i]``."""

    user: I64
    clock: F64
    summary: WindowSummary
    targets: Ragged
    seen: Ragged

    def __len__(self) -> int:
        return len(self.user)

    def take(self, idx: I64) -> Examples:
        return Examples(
            user=self.user[idx],
            clock=self.clock[idx],
            summary=self.summary.rows(idx),
            targets=self.targets.take(idx),
            seen=self.seen.take(idx),
        )

    @classmethod
    def empty(cls, d: int) -> Examples:
        nothing = Ragged(np.zeros(1, dtype=np.int64), np.empty(0, dtype=np.int64))
        return cls(
            user=np.empty(0, dtype=np.int64),
            clock=np.empty(0, dtype=np.float64),
            summary=WindowSummary(
                sums=np.empty((0, d)),
                weight_sums=np.empty(0),
                counts=np.empty(0, dtype=np.int64),
            ),
            targets=nothing,
            seen=nothing,
        )

    def pairs(self) -> list[tuple[int, float]]:
        return list(zip(self.user.tolist(), self.clock.tolist(), strict=True))

    @classmethod
    def concat(cls, parts: Sequence[Examples]) -> Examples:
        return cls(
            user=np.concatenate([p.user for p in parts]),
            clock=np.concatenate([p.clock for p in parts]),
            summary=WindowSummary.concat([p.summary for p in parts]),
            targets=Ragged.concat([p.targets for p in parts]),
            seen=Ragged.concat([p.seen for p in parts]),
        )


def grouped_sums(
    groups: I64, weights: F64, rows: I64, vectors: F32, n_groups: int
) -> tuple[F64, F64]:
    """``Σ w·v`` and ``Σ w`` per group, ``groups`` sorted; float64, in bounded memory."""
    sums = np.zeros((n_groups, vectors.shape[1]), dtype=np.float64)
    totals = np.bincount(groups, weights=weights, minlength=n_groups).astype(np.float64)
    for lo in range(0, len(groups), _CHUNK):
        g = groups[lo : lo + _CHUNK]
        starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
        terms = weights[lo : lo + _CHUNK, None] * vectors[rows[lo : lo + _CHUNK]].astype(np.float64)
        sums[g[starts]] += np.add.reduceat(terms, starts, axis=0)
    return sums, totals


def _pairs_of(users: I64, codes: I64, n_items: int) -> Ragged:
    """Sorted ``user·n_items + item`` codes of the given (sorted, distinct) users as rows."""
    owner = codes // n_items
    keep = np.isin(owner, users)
    codes, owner = codes[keep], owner[keep]
    seg: I64 = np.append(np.searchsorted(owner, users), len(codes)).astype(np.int64)
    return Ragged(seg, (codes % n_items).astype(np.int64))


def examples_at(
    log: IndexedLog,
    vectors: F32,
    spec: ExampleSpec,
    clock: float,
    *,
    half_life: float | None = None,
    buckets: I64 | None = None,
) -> Examples:
    """Every user with a non-empty window at ``clock`` and at least one unseen target."""
    w = spec.window
    if buckets is None:
        buckets = w.bucket_of_array(log.ts)
    start_t = spec.target_start(clock)
    n = log.n_items
    codes = log.user * n + log.item
    target_codes = np.unique(codes[(log.ts >= start_t) & (log.ts < start_t + spec.horizon)])
    seen_codes = np.unique(codes[log.ts < start_t])
    target_codes = np.setdiff1d(target_codes, seen_codes, assume_unique=True)
    candidates = np.unique(target_codes // n)
    end = w.end_bucket(clock)
    in_window = (buckets >= end - w.n_buckets) & (buckets < end) & np.isin(log.user, candidates)
    users = np.unique(log.user[in_window])
    slot = np.searchsorted(users, log.user[in_window])
    rows = log.item[in_window]
    weights = log.weight[in_window]
    sums, weight_sums = grouped_sums(slot, weights, rows, vectors, len(users))
    decayed_sums = decayed_weights = None
    if half_life is not None:
        age = (end - buckets[in_window]).astype(np.float64)
        decayed = weights * np.exp2(-age * (w.bucket / half_life))
        decayed_sums, decayed_weights = grouped_sums(slot, decayed, rows, vectors, len(users))
    return Examples(
        user=users,
        clock=np.full(len(users), float(clock)),
        summary=WindowSummary(
            sums=sums,
            weight_sums=weight_sums,
            counts=np.bincount(slot, minlength=len(users)).astype(np.int64),
            decayed_sums=decayed_sums,
            decayed_weights=decayed_weights,
        ),
        targets=_pairs_of(users, target_codes, n),
        seen=_pairs_of(users, seen_codes, n),
    )


def build_examples(
    log: IndexedLog,
    vectors: F32,
    spec: ExampleSpec,
    clocks: Sequence[float] | F64,
    *,
    half_life: float | None = None,
) -> Examples:
    """Examples at every clock, in clock order then user order."""
    buckets = spec.window.bucket_of_array(log.ts)
    parts = [
        examples_at(log, vectors, spec, float(t), half_life=half_life, buckets=buckets)
        for t in sorted(set(np.asarray(clocks, dtype=np.float64).tolist()))
    ]
    if not parts:
        return Examples.empty(vectors.shape[1])
    return Examples.concat(parts)


def clock_grid(first: float, last: float, every: int, bucket: int) -> F64:
    """Clocks on bucket edges from the first edge ``>= first`` to ``last``, ``every`` apart.
    Edges make the window end exactly ``T - L`` when ``L`` is whole buckets."""
    if every < 1:
        raise ConfigError(f"stride: must be at least 1s, got {every}s")
    t0 = math.ceil(first / bucket) * bucket
    if t0 > last:
        return np.empty(0, dtype=np.float64)
    return np.arange(t0, last + 1e-9, every, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class TimeSplit:
    """Training and validation clocks with no leak: every event a training example reads,
    input or target, happens before ``validation_from``, where validation targets begin."""

    train: F64
    validation: F64
    validation_from: float
    until: float


def time_split(
    spec: ExampleSpec, first_ts: float, until: float, *, stride: int, validation_span: int
) -> TimeSplit:
    """Clocks every ``stride`` whose targets end by ``until``; those whose targets start in
    the last ``validation_span`` before ``until`` (its start moved back to a bucket edge, where
    target starts lie) validate, the ones whose targets end before that span train."""
    if validation_span < spec.horizon:
        raise ConfigError(
            f"--val-span: {format_duration(validation_span)} is shorter than the horizon "
            f"{format_duration(spec.horizon)}; no validation target would fit"
        )
    w = spec.window
    first = first_ts + w.bucket + (w.lag if spec.targets_after == TARGETS_AFTER_WINDOW else 0)
    clocks = clock_grid(first, until + w.lag + w.bucket, stride, w.bucket)
    starts = np.array([spec.target_start(t) for t in clocks.tolist()], dtype=np.float64)
    validation_from = float(math.floor((until - validation_span) / w.bucket) * w.bucket)
    train = clocks[starts + spec.horizon <= validation_from]
    validation = clocks[(starts >= validation_from) & (starts + spec.horizon <= until)]
    if len(train) == 0 or len(validation) == 0:
        raise ConfigError(
            f"no {'training' if len(train) == 0 else 'validation'} clocks between the first "
            f"event and --until with --val-span {format_duration(validation_span)} and "
            f"{spec.describe()}; use a longer log, a shorter --val-span or --horizon"
        )
    return TimeSplit(train, validation, validation_from, until)
