"""Small random interaction logs and catalogs for the encoder tests.

Users come back in several sessions over months (so lagged windows and later horizons both
have events), and item choice mixes a global popularity skew with the user's own taste: the
two signals an encoder can learn from behaviour.
"""

from __future__ import annotations

import numpy as np

from lte_core.basis import BasisArtifact
from offline.datasets import InteractionLog

DAY = 86400
T0 = 1_600_000_000.0


def catalog(seed: int, n_items: int = 40, d: int = 8, k: int | None = None) -> BasisArtifact:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n_items, d)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return BasisArtifact.build([f"i{i}" for i in range(n_items)], vectors, k=k)


def random_log(
    seed: int,
    basis: BasisArtifact,
    *,
    users: int = 40,
    days: int = 120,
    sessions: tuple[int, int] = (2, 8),
    per_session: tuple[int, int] = (1, 6),
) -> InteractionLog:
    rng = np.random.default_rng(seed)
    n = basis.n_items
    popularity = 1.0 / np.arange(1, n + 1) ** 1.2
    popularity /= popularity.sum()
    vectors = basis.item_vectors.astype(np.float64)
    rows: list[tuple[str, str, float, float]] = []
    for u in range(users):
        taste = vectors[rng.integers(n)]
        affinity = np.exp(4.0 * vectors @ taste)
        affinity /= affinity.sum()
        mix = 0.5 * popularity + 0.5 * affinity
        for _ in range(int(rng.integers(sessions[0], sessions[1] + 1))):
            start = T0 + rng.uniform(0, days * DAY)
            for _ in range(int(rng.integers(per_session[0], per_session[1] + 1))):
                item = int(rng.choice(n, p=mix))
                ts = float(np.floor(start + rng.uniform(0, 3 * 3600)))
                rows.append((f"u{u}", basis.item_ids[item], ts, float(rng.choice([1.0, 2.0]))))
    users_col, items_col, ts_col, w_col = zip(*rows, strict=True)
    return InteractionLog(
        user_ids=np.asarray(users_col, dtype=np.str_),
        item_ids=np.asarray(items_col, dtype=np.str_),
        ts=np.asarray(ts_col, dtype=np.float64),
        weights=np.asarray(w_col, dtype=np.float64),
    )
