"""Readers for interaction logs used by the demo, replays, training and benchmarks.

MovieLens is read in place from wherever the operator keeps it (its licence forbids
redistribution, so nothing here copies it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from lte_core.basis import BasisArtifact
from lte_core.errors import LTEError


class DatasetError(LTEError):
    """An interaction log or its item embeddings cannot be read."""


@dataclass(frozen=True, slots=True)
class InteractionLog:
    """Columns of an interaction log, in file order. Ids are strings, as on the wire."""

    user_ids: npt.NDArray[np.str_]
    item_ids: npt.NDArray[np.str_]
    ts: npt.NDArray[np.float64]
    weights: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.ts)

    def sorted_by_time(self) -> InteractionLog:
        order = np.argsort(self.ts, kind="stable")
        return InteractionLog(
            self.user_ids[order], self.item_ids[order], self.ts[order], self.weights[order]
        )


@dataclass(frozen=True, slots=True)
class MovieLens:
    log: InteractionLog
    item_ids: list[str]
    vectors: npt.NDArray[np.float32]
    titles: dict[str, str]

    def basis(self, k: int | None = None) -> BasisArtifact:
        return BasisArtifact.build(
            self.item_ids, self.vectors, k=k, content_model="all-MiniLM-L6-v2"
        )


def read_movielens_ratings(path: Path) -> InteractionLog:
    """``u.data``: ``user \\t item \\t rating \\t unix_ts``; every rating is one event of
    weight 1 (the rating value says how the user judged the item, not that they saw it)."""
    try:
        raw = np.loadtxt(path, dtype=np.int64, delimiter="\t", ndmin=2)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read MovieLens ratings ({exc})") from exc
    if raw.shape[1] != 4:
        raise DatasetError(f"{path}: expected 4 tab-separated columns, got {raw.shape[1]}")
    return InteractionLog(
        user_ids=raw[:, 0].astype(str),
        item_ids=raw[:, 1].astype(str),
        ts=raw[:, 3].astype(np.float64),
        weights=np.ones(len(raw), dtype=np.float64),
    )


def load_movielens(directory: Path) -> MovieLens:
    """ML-100K with the content embeddings shipped beside it (see the data README)."""
    try:
        vectors = np.load(directory / "item_embeddings.npy", allow_pickle=False)
        item_ids = (directory / "item_ids.txt").read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{directory}: cannot read item embeddings ({exc})") from exc
    titles: dict[str, str] = {}
    item_file = directory / "u.item"
    if item_file.is_file():
        for line in item_file.read_text(encoding="latin-1").splitlines():
            fields = line.split("|")
            if len(fields) > 1:
                titles[fields[0]] = fields[1]
    return MovieLens(
        log=read_movielens_ratings(directory / "u.data"),
        item_ids=item_ids,
        vectors=np.ascontiguousarray(vectors, dtype=np.float32),
        titles=titles,
    )
