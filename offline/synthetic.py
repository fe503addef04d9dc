"""A synthetic interaction stream with the structure LTEs exist for.

* a catalog of items whose content vectors cluster by genre (unit vectors);
* Zipf item popularity inside each genre;
* users with **stable long-term tastes** (a few favourite genres) and **short-term bursts**
  (for a week or so a random genre takes over part of their activity) — the recency bias a
  long-term embedding is meant to see through;
* heavy-tailed user activity (log-normal rates), events spread over ``days``.

Deterministic for a seed, generated in time order in chunks so 10^7 events never sit in
memory at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lte_core.basis import BasisArtifact
from offline.datasets import InteractionLog

GENRES = (
    "drama",
    "comedy",
    "thriller",
    "sci-fi",
    "romance",
    "documentary",
    "animation",
    "horror",
    "crime",
    "fantasy",
    "western",
    "musical",
    "war",
    "mystery",
    "adventure",
    "family",
)
DAY = 86400.0


@dataclass(frozen=True, slots=True)
class SyntheticCatalog:
    item_ids: list[str]
    vectors: npt.NDArray[np.float32]
    genre: npt.NDArray[np.int64]
    titles: dict[str, str]

    def basis(self, k: int | None = None) -> BasisArtifact:
        return BasisArtifact.build(self.item_ids, self.vectors, k=k, content_model="synthetic")


@dataclass(frozen=True, slots=True)
class SyntheticSpec:
    users: int = 10_000
    items: int = 5_000
    dim: int = 64
    events: int = 1_000_000
    days: float = 120.0
    start: float = 1_700_000_000.0
    burst_share: float = 0.3
    seed: int = 7


class SyntheticStream:
    def __init__(self, spec: SyntheticSpec) -> None:
        self.spec = spec
        rng = np.random.default_rng(spec.seed)
        g = len(GENRES)
        centers = rng.standard_normal((g, spec.dim))
        centers /= np.linalg.norm(centers, axis=1, keepdims=True)
        genre = rng.integers(0, g, spec.items)
        vectors = centers[genre] + 0.45 * rng.standard_normal((spec.items, spec.dim)) / np.sqrt(
            spec.dim / 16
        )
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        ids = [f"i{i}" for i in range(spec.items)]
        rank = np.empty(spec.items, dtype=np.int64)
        self._by_genre: list[npt.NDArray[np.int64]] = []
        self._genre_pop: list[npt.NDArray[np.float64]] = []
        for k in range(g):
            members = np.flatnonzero(genre == k)
            members = members[rng.permutation(len(members))]
            rank[members] = np.arange(len(members))
            pop = 1.0 / np.arange(1, len(members) + 1) ** 1.1
            self._by_genre.append(members)
            self._genre_pop.append(pop / pop.sum())
        self.catalog = SyntheticCatalog(
            item_ids=ids,
            vectors=vectors.astype(np.float32),
            genre=genre,
            titles={
                f"i{i}": f"{GENRES[genre[i]].title()} #{rank[i] + 1}" for i in range(spec.items)
            },
        )
        self._taste = rng.dirichlet(np.full(g, 0.15), spec.users)
        activity = rng.lognormal(0.0, 1.0, spec.users)
        self._activity = activity / activity.sum()
        self._seed = spec.seed

    def taste(self, user: int) -> npt.NDArray[np.float64]:
        """The user's long-term genre preferences (what a good LTE should reflect)."""
        out: npt.NDArray[np.float64] = self._taste[user]
        return out

    def chunks(self, size: int = 200_000) -> Iterator[InteractionLog]:
        """The stream in time order, ``size`` events at a time."""
        spec = self.spec
        rng = np.random.default_rng(self._seed + 1)
        g = len(GENRES)
        span = spec.days * DAY
        done = 0
        t = spec.start
        step = span / max(spec.events, 1)
        while done < spec.events:
            n = min(size, spec.events - done)
            gaps = rng.exponential(step, n)
            ts = t + np.cumsum(gaps)
            t = float(ts[-1])
            users = rng.choice(spec.users, n, p=self._activity)
            week = ((ts - spec.start) // (7 * DAY)).astype(np.int64)
            burst_genre = (users * 2_654_435_761 + week * 40_503) % g
            cum = np.cumsum(self._taste[users], axis=1)
            u = rng.random(n)[:, None]
            taste_genre = np.minimum((u > cum).sum(axis=1), g - 1)
            genre = np.where(rng.random(n) < spec.burst_share, burst_genre, taste_genre)
            items = np.empty(n, dtype=np.int64)
            for k in range(g):
                mask = genre == k
                if mask.any():
                    items[mask] = rng.choice(
                        self._by_genre[k], int(mask.sum()), p=self._genre_pop[k]
                    )
            done += n
            yield InteractionLog(
                user_ids=np.char.add("u", users.astype(str)),
                item_ids=np.char.add("i", items.astype(str)),
                ts=np.round(ts, 3),
                weights=np.ones(n),
            )


@dataclass(frozen=True, slots=True)
class PlantedTasteSpec:
    """A small log where the long-term taste is what predicts the item after a burst.

    Every user has one taste genre and alternates, in cycles, between a *taste block*
    (``taste_block`` events, each a taste item with probability ``taste_share``) and a
    *burst block* (``burst_block`` events of random genres that change every
    ``burst_length`` events). The history ends with a burst block and then one taste item:
    the user comes back to what they like. With ``burst_block >= max_len`` the recent input
    before every return holds no taste item, so a model that sees only the recent items
    cannot know which genre comes back, and one that reads the lagged LTE (the earlier taste
    blocks) can: in training (the returns inside the history) as at test (the last item,
    leave-one-out's test target). The defaults suit ``--max-len 5`` and train in seconds.
    Not a claim about real data: a check that the LTE is wired in.
    """

    users: int = 200
    items: int = 160
    genres: int = 16
    dim: int = 32
    history: int = 60
    taste_block: int = 3
    burst_block: int = 6
    taste_share: float = 1.0
    burst_length: int = 3
    start: float = 1_700_000_000.0
    seed: int = 0


def planted_taste(spec: PlantedTasteSpec) -> tuple[InteractionLog, SyntheticCatalog]:
    """The log (one event per hour and user, in user order) and its catalog."""
    rng = np.random.default_rng(spec.seed)
    g = min(spec.genres, len(GENRES))
    centers = rng.standard_normal((g, spec.dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    genre = np.arange(spec.items) % g
    vectors = centers[genre] + 0.3 * rng.standard_normal((spec.items, spec.dim)) / np.sqrt(spec.dim)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    members = [np.flatnonzero(genre == k) for k in range(g)]
    pop = [1.0 / np.arange(1, len(m) + 1) ** 0.8 for m in members]
    pop = [p / p.sum() for p in pop]
    taste = rng.integers(0, g, spec.users)
    n = spec.history
    position = np.arange(n)
    from_end = n - 1 - position
    cycle = spec.taste_block + spec.burst_block
    in_taste_block = (from_end + spec.taste_block - 1) % cycle < spec.taste_block
    chosen_genre = np.empty((spec.users, n), dtype=np.int64)
    for u in range(spec.users):
        bursts = rng.integers(0, g, n // spec.burst_length + 1)[position // spec.burst_length]
        is_taste = in_taste_block & (rng.random(n) < spec.taste_share)
        is_taste[-1] = True
        chosen_genre[u] = np.where(is_taste, taste[u], bursts)
    items = np.empty((spec.users, n), dtype=np.int64)
    for k in range(g):
        mask = chosen_genre == k
        items[mask] = rng.choice(members[k], int(mask.sum()), p=pop[k])
    ids = [f"i{i}" for i in range(spec.items)]
    catalog = SyntheticCatalog(
        item_ids=ids,
        vectors=vectors.astype(np.float32),
        genre=genre.astype(np.int64),
        titles={f"i{i}": f"{GENRES[genre[i]].title()} #{i}" for i in range(spec.items)},
    )
    users = np.repeat(np.arange(spec.users), n)
    log = InteractionLog(
        user_ids=np.char.add("u", users.astype(str)),
        item_ids=np.char.add("i", items.ravel().astype(str)),
        ts=spec.start + 3600.0 * np.tile(position, spec.users).astype(np.float64),
        weights=np.ones(spec.users * n),
    )
    return log, catalog
