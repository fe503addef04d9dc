"""Reading users' LTEs back in words: what is in a window, what sets an LTE apart, and a
from-scratch recomputation to check the stored LTEs against.

A mean of content vectors sits near the population's centroid, so the items nearest to an
LTE are the same central titles for everyone. What distinguishes a user is the LTE's
*deviation* from the population mean LTE: items are ranked by cosine to ``LTE - mean LTE``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from lte_cli.demo_data import DemoData

F64 = npt.NDArray[np.float64]


def window_mask(data: DemoData, now: float) -> npt.NDArray[np.bool_]:
    """Which events of the log are in their user's window at clock ``now`` (DESIGN 3.2)."""
    spec = data.spec
    bucket = spec.bucket_of_array(data.ts)
    return (bucket >= spec.start_bucket(now)) & (bucket < spec.end_bucket(now))


@dataclass(frozen=True, slots=True)
class Recomputed:
    """Every user's window mean at one clock, from scratch (users without events: 0)."""

    users: list[str]
    means: F64
    counts: npt.NDArray[np.int64]


def recompute(data: DemoData, now: float) -> Recomputed:
    users = data.users
    index = {u: k for k, u in enumerate(users)}
    row = {item: k for k, item in enumerate(data.catalog)}
    mask = window_mask(data, now)
    who = np.array([index[u] for u in data.user_ids[mask].tolist()], dtype=np.int64)
    what = np.array([row[i] for i in data.item_ids[mask].tolist()], dtype=np.int64)
    sums = np.zeros((len(users), data.vectors.shape[1]))
    np.add.at(sums, who, data.vectors[what].astype(np.float64))
    counts = np.bincount(who, minlength=len(users))
    means = sums / np.maximum(counts, 1)[:, None]
    return Recomputed(users, means, counts)


def _genre_tally(data: DemoData, items: list[str]) -> dict[str, float]:
    """How many of ``items`` fall in each genre (an item with several genres counts a share
    for each)."""
    tally: dict[str, float] = {}
    for item in items:
        genres = data.genres.get(item) or ("unknown",)
        for genre in genres:
            tally[genre] = tally.get(genre, 0.0) + 1.0 / len(genres)
    return tally


def user_groups(data: DemoData, now: float) -> dict[str, str]:
    """Each user's most frequent genre among the events in their window."""
    mask = window_mask(data, now)
    items: dict[str, list[str]] = {}
    for user, item in zip(data.user_ids[mask].tolist(), data.item_ids[mask].tolist(), strict=True):
        items.setdefault(user, []).append(item)
    out = {}
    for user, theirs in items.items():
        tally = _genre_tally(data, theirs)
        out[user] = max(tally, key=lambda g: tally[g])
    return out


def genre_shares(data: DemoData, user: str, lo: float, hi: float, k: int = 3) -> str:
    """The top ``k`` genres of ``user``'s events with ``lo <= ts < hi``, as shares."""
    mask = (data.user_ids == user) & (data.ts >= lo) & (data.ts < hi)
    tally = _genre_tally(data, data.item_ids[mask].tolist())
    n = sum(tally.values()) or 1.0
    top = sorted(tally.items(), key=lambda kv: -kv[1])[:k]
    return ", ".join(f"{g} {c / n:.0%}" for g, c in top)


def latest_items(data: DemoData, user: str, before: float, k: int = 3) -> list[str]:
    """``user``'s last ``k`` items before ``before``, with their dates."""
    mask = (data.user_ids == user) & (data.ts < before)
    return [
        f"{data.title(i)} ({datetime.fromtimestamp(t, UTC):%Y-%m-%d})"
        for i, t in zip(data.item_ids[mask][-k:].tolist(), data.ts[mask][-k:].tolist(), strict=True)
    ]


class Distinguisher:
    """Ranks catalog items by cosine to an LTE's deviation from the population mean LTE."""

    def __init__(self, data: DemoData, population_mean: F64) -> None:
        self._data = data
        self._mean = population_mean
        items = data.vectors.astype(np.float64)
        self._items = items / np.maximum(np.linalg.norm(items, axis=1, keepdims=True), 1e-12)

    def top(self, vector: F64, k: int = 5) -> list[str]:
        deviation = vector - self._mean
        norm = float(np.linalg.norm(deviation))
        if norm == 0.0:
            return []
        scores = self._items @ (deviation / norm)
        return [self._data.title(self._data.catalog[i]) for i in np.argsort(-scores)[:k].tolist()]
