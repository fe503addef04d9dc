"""Readers for interaction logs used by the demo, replays, training and benchmarks.

MovieLens is read in place from wherever the operator keeps it (its licence forbids
redistribution, so nothing here copies it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import orjson

from lte_core.basis import BasisArtifact
from lte_core.errors import LTEError
from lte_core.events import EventRules, Rejection, parse_interaction

#: Formats :func:`read_interaction_log` understands; ``auto`` decides from the file name.
LOG_FORMATS = ("auto", "movielens", "jsonl")


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


def read_interactions_jsonl(
    path: Path, *, type_weights: dict[str, float] | None = None
) -> InteractionLog:
    """JSON lines, one ``interactions`` record (DESIGN 3.1) per line, validated by the same
    rules as the worker's input so a log trains on exactly what the stream would accept.
    A file is read whole and refused at its first bad line (with the line number): training
    on a silently filtered log would hide a broken export."""
    rules = EventRules(max_record_bytes=1 << 20, type_weights=type_weights)
    users: list[str] = []
    items: list[str] = []
    ts: list[float] = []
    weights: list[float] = []
    try:
        with path.open("rb") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                parsed = parse_interaction(_key_of(line), line, math.inf, rules)
                if isinstance(parsed, Rejection):
                    raise DatasetError(f"{path}:{number}: {parsed.reason}: {parsed.detail}")
                users.append(parsed.user_id)
                items.append(parsed.item_id)
                ts.append(parsed.ts)
                weights.append(parsed.weight)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read JSON lines ({exc})") from exc
    return InteractionLog(
        user_ids=np.asarray(users, dtype=np.str_),
        item_ids=np.asarray(items, dtype=np.str_),
        ts=np.asarray(ts, dtype=np.float64),
        weights=np.asarray(weights, dtype=np.float64),
    )


def write_interactions_jsonl(log: InteractionLog, path: Path) -> Path:
    """The log as ``interactions`` records (DESIGN 3.1), one per line, in file order: what
    :func:`read_interactions_jsonl` reads back."""
    with path.open("wb") as out:
        for u, i, t, w in zip(
            log.user_ids.tolist(),
            log.item_ids.tolist(),
            log.ts.tolist(),
            log.weights.tolist(),
            strict=True,
        ):
            out.write(orjson.dumps({"user_id": u, "item_id": i, "ts": t, "weight": w}) + b"\n")
    return path


def _key_of(line: bytes) -> bytes | None:
    """A file has no Kafka key; the record's own ``user_id`` plays its part."""
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    user = doc.get("user_id") if isinstance(doc, dict) else None
    return user.encode() if isinstance(user, str) else None


def read_interaction_log(
    path: Path, log_format: str = "auto", *, type_weights: dict[str, float] | None = None
) -> InteractionLog:
    """MovieLens ``u.data`` (or a directory holding it) or JSON lines, by ``log_format``;
    ``type_weights`` as the worker's ``--type-weights`` (JSON lines only)."""
    if log_format not in LOG_FORMATS:
        raise DatasetError(f"--log-format: expected one of {', '.join(LOG_FORMATS)}")
    if log_format == "auto":
        if path.is_dir() or path.suffix == ".data":
            log_format = "movielens"
        elif path.suffix in {".jsonl", ".json", ".ndjson"}:
            log_format = "jsonl"
        else:
            raise DatasetError(
                f"{path}: cannot tell the format from the name; pass --log-format "
                "movielens or --log-format jsonl"
            )
    if log_format == "movielens":
        return read_movielens_ratings(path / "u.data" if path.is_dir() else path)
    return read_interactions_jsonl(path, type_weights=type_weights)
