"""Users' histories as ordered item sequences, the two evaluation protocols, and the
fixed-length arrays the model reads.

Order inside a history is time, then file order (half of ML-100K's consecutive interactions
share a timestamp, so the tie-break decides which item is "last"). Item tokens are basis
rows + 1; 0 is padding. Arrays are left-padded so the last real item always sits in the
last column (as in pmixer/SASRec.pytorch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lte_core.basis import BasisArtifact
from lte_core.errors import ConfigError
from offline.datasets import InteractionLog
from offline.training_examples import Ragged

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

LEAVE_ONE_OUT = "leave-one-out"
TEMPORAL = "temporal"
PROTOCOLS = (LEAVE_ONE_OUT, TEMPORAL)


@dataclass(frozen=True, slots=True)
class Histories:
    """User ``i`` owns rows ``seg[i]:seg[i+1]`` of ``token``/``ts``, in history order."""

    user_ids: npt.NDArray[np.str_]
    seg: I64
    token: I64
    ts: F64
    item_ids: npt.NDArray[np.str_]

    @classmethod
    def from_log(cls, log: InteractionLog, basis: BasisArtifact) -> Histories:
        rows = basis.rows_of(log.item_ids.tolist())
        known = np.flatnonzero(rows >= 0)
        user_ids, user = np.unique(log.user_ids[known], return_inverse=True)
        order = np.lexsort((known, log.ts[known], user))
        counts = np.bincount(user, minlength=len(user_ids))
        seg = np.zeros(len(user_ids) + 1, dtype=np.int64)
        np.cumsum(counts, out=seg[1:])
        idx = known[order]
        return cls(
            user_ids=user_ids,
            seg=seg,
            token=rows[idx].astype(np.int64) + 1,
            ts=log.ts[idx].astype(np.float64),
            item_ids=log.item_ids[idx],
        )

    def __len__(self) -> int:
        return len(self.user_ids)

    def lengths(self) -> I64:
        return np.diff(self.seg)

    def positions(self) -> I64:
        """Each event's ordinal position in its user's history."""
        return np.arange(len(self.token), dtype=np.int64) - np.repeat(self.seg[:-1], self.lengths())

    def owners(self) -> I64:
        return np.repeat(np.arange(len(self), dtype=np.int64), self.lengths())

    def take_users(self, users: I64) -> Histories:
        part = Ragged(self.seg, np.arange(len(self.token), dtype=np.int64)).take(users)
        return Histories(
            user_ids=self.user_ids[users],
            seg=part.seg,
            token=self.token[part.values],
            ts=self.ts[part.values],
            item_ids=self.item_ids[part.values],
        )


@dataclass(frozen=True, slots=True)
class Split:
    """Per user: positions ``< train_end`` train; the validation and test targets sit at
    positions ``val_at`` and ``test_at`` (``-1``: the user has no such case)."""

    protocol: str
    train_end: I64
    val_at: I64
    test_at: I64


def leave_one_out(histories: Histories) -> Split:
    """Second-to-last item validates, last item tests, the rest trains (users with fewer
    than 3 items train only)."""
    n = histories.lengths()
    ok = n >= 3
    return Split(
        protocol=LEAVE_ONE_OUT,
        train_end=np.where(ok, n - 2, n),
        val_at=np.where(ok, n - 2, -1),
        test_at=np.where(ok, n - 1, -1),
    )


def temporal_split(histories: Histories, val_from: float, test_from: float) -> Split:
    """One global clock for everyone: events before ``val_from`` train; a user's first item
    at or after ``val_from`` (and before ``test_from``) validates; the first at or after
    ``test_from`` tests. A case needs at least one earlier item as input."""
    if not val_from < test_from:
        raise ConfigError("temporal split: the validation start must precede the test start")
    seg, ts = histories.seg, histories.ts
    m = len(histories)
    train_end = np.empty(m, dtype=np.int64)
    val_at = np.full(m, -1, dtype=np.int64)
    test_at = np.full(m, -1, dtype=np.int64)
    for i in range(m):
        user_ts = ts[seg[i] : seg[i + 1]]
        v = int(np.searchsorted(user_ts, val_from, side="left"))
        t = int(np.searchsorted(user_ts, test_from, side="left"))
        train_end[i] = v
        if v < t and v >= 1:
            val_at[i] = v
        if t < len(user_ts) and t >= 1:
            test_at[i] = t
    return Split(TEMPORAL, train_end, val_at, test_at)


def temporal_cuts(
    histories: Histories, val_share: float = 0.1, test_share: float = 0.1
) -> tuple[float, float]:
    """Global cut times leaving the last ``test_share`` of events for test and the
    ``val_share`` before them for validation."""
    ts = np.sort(histories.ts)
    test_from = float(ts[int(len(ts) * (1 - test_share))])
    val_from = float(ts[int(len(ts) * (1 - test_share - val_share))])
    if val_from >= test_from:
        test_from = float(np.nextafter(val_from, np.inf))
    return val_from, test_from


@dataclass(frozen=True, slots=True)
class Chunks:
    """Training sequences: row ``j`` has inputs at positions ``[start[j], end[j])`` of user
    ``user[j]`` and predicts positions ``[start[j] + 1, end[j] + 1)``."""

    user: I64
    start: I64
    end: I64

    def __len__(self) -> int:
        return len(self.user)


def training_chunks(histories: Histories, split: Split, length: int) -> Chunks:
    """Each user's training targets cut, from the end backwards, into non-overlapping runs of
    ``length``: every training target is predicted exactly once per epoch, whatever the
    input length of the variant."""
    users: list[int] = []
    starts: list[int] = []
    ends: list[int] = []
    for i, stop in enumerate(split.train_end.tolist()):
        e = stop - 1
        while e > 0:
            s = max(0, e - length)
            users.append(i)
            starts.append(s)
            ends.append(e)
            e = s
    return Chunks(
        np.asarray(users, dtype=np.int64),
        np.asarray(starts, dtype=np.int64),
        np.asarray(ends, dtype=np.int64),
    )


@dataclass(frozen=True, slots=True)
class Cases:
    """Evaluation cases: user ``user[i]`` predicts the item at position ``at[i]`` from the
    items before it."""

    user: I64
    at: I64

    def __len__(self) -> int:
        return len(self.user)


def cases_of(at: I64) -> Cases:
    users = np.flatnonzero(at >= 0).astype(np.int64)
    return Cases(users, at[users])


def padded_inputs(histories: Histories, user: I64, start: I64, end: I64, length: int) -> I64:
    """``(n, length)`` tokens of positions ``[start, end)``, left-padded with 0; rows whose
    range is longer than ``length`` keep its last ``length`` items."""
    out = np.zeros((len(user), length), dtype=np.int64)
    first = np.maximum(start, end - length)
    for j, (u, s, e) in enumerate(zip(user.tolist(), first.tolist(), end.tolist(), strict=True)):
        base = int(histories.seg[u])
        run = histories.token[base + s : base + e]
        if len(run):
            out[j, length - len(run) :] = run
    return out


def seen_before(histories: Histories, cases: Cases) -> tuple[Ragged, Ragged]:
    """Per case the target (basis row) and the items seen before it, minus the target: a
    re-consumed item stays a candidate."""
    target_rows = np.empty(len(cases), dtype=np.int64)
    seen_rows: list[I64] = []
    for j, (u, t) in enumerate(zip(cases.user.tolist(), cases.at.tolist(), strict=True)):
        base = int(histories.seg[u])
        target = int(histories.token[base + t]) - 1
        target_rows[j] = target
        before = np.unique(histories.token[base : base + t] - 1)
        seen_rows.append(before[before != target])
    seg = np.zeros(len(cases) + 1, dtype=np.int64)
    np.cumsum([len(s) for s in seen_rows], out=seg[1:])
    values = np.concatenate(seen_rows) if seen_rows else np.empty(0, dtype=np.int64)
    targets = Ragged(np.arange(len(cases) + 1, dtype=np.int64), target_rows)
    return targets, Ragged(seg, values.astype(np.int64))
