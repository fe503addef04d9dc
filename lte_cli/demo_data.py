"""What ``lte demo`` replays: MovieLens 100K or the synthetic stream, as Kafka records in time
order, with what the demo needs to explain the results (titles, genres, each user's events)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import orjson

from lte_core.window import WindowSpec

Record = tuple[bytes | None, bytes]


@dataclass(frozen=True)
class DemoData:
    """The log (sorted by time), the catalog, and the window the demo runs with."""

    name: str
    user_ids: npt.NDArray[np.str_]
    item_ids: npt.NDArray[np.str_]
    ts: npt.NDArray[np.float64]
    catalog: list[str]
    vectors: npt.NDArray[np.float32]
    titles: dict[str, str]
    #: each catalog item's genres (MovieLens: u.item's flags; synthetic: its one genre)
    genres: dict[str, tuple[str, ...]]
    spec: WindowSpec
    #: how to colour users on the map: by their dominant "genre" or synthetic "cluster"
    group_label: str

    @property
    def start(self) -> float:
        return float(self.ts[0])

    @property
    def end(self) -> float:
        """The clock at the end of the replay: just after the last event."""
        return float(self.ts[-1]) + 1.0

    @property
    def users(self) -> list[str]:
        return sorted(set(self.user_ids.tolist()))

    def records(self) -> list[Record]:
        return [
            (u.encode(), orjson.dumps({"user_id": u, "item_id": i, "ts": t}))
            for u, i, t in zip(
                self.user_ids.tolist(), self.item_ids.tolist(), self.ts.tolist(), strict=True
            )
        ]

    def title(self, item: str) -> str:
        return self.titles.get(item, item)


def with_bad_records(
    records: list[Record], ts: npt.NDArray[np.float64], n: int, seed: int = 1
) -> tuple[list[Record], npt.NDArray[np.float64]]:
    """The records with ``n`` broken ones spread among them (each due with its neighbour), so
    the dead-letter path shows up in the summary."""
    kinds: list[Record] = [
        (b"u-bad", b"{not json"),
        (b"u-bad", b'{"user_id":"u-bad","item_id":"no-such-item","ts":1}'),
        (b"someone", b'{"user_id":"u-bad","item_id":"1","ts":1}'),
        (b"u-bad", b'{"user_id":"u-bad","ts":1}'),
    ]
    rng = np.random.default_rng(seed)
    at = np.sort(rng.integers(0, len(records), n))
    out: list[Record] = []
    out_ts: list[float] = []
    previous = 0
    for k, position in zip(rng.integers(0, len(kinds), n).tolist(), at.tolist(), strict=True):
        out.extend(records[previous:position])
        out_ts.extend(ts[previous:position].tolist())
        out.append(kinds[k])
        out_ts.append(float(ts[position]))
        previous = position
    out.extend(records[previous:])
    out_ts.extend(ts[previous:].tolist())
    return out, np.asarray(out_ts)


def movielens_genres(directory: Path) -> dict[str, tuple[str, ...]]:
    """``u.item``'s 19 genre flags named by ``u.genre``."""
    names = [
        line.split("|")[0]
        for line in (directory / "u.genre").read_text(encoding="latin-1").splitlines()
        if line.strip()
    ]
    genres: dict[str, tuple[str, ...]] = {}
    for line in (directory / "u.item").read_text(encoding="latin-1").splitlines():
        fields = line.split("|")
        flags = fields[-len(names) :]
        genres[fields[0]] = tuple(
            name for name, flag in zip(names, flags, strict=True) if flag == "1"
        )
    return genres


def movielens_data(directory: Path, events: int | None, window: str, lag: str) -> DemoData:
    from offline.datasets import load_movielens  # noqa: PLC0415

    ml = load_movielens(directory)
    log = ml.log.sorted_by_time()
    if events is not None:
        log = type(log)(
            log.user_ids[:events], log.item_ids[:events], log.ts[:events], log.weights[:events]
        )
    return DemoData(
        name=f"MovieLens 100K ({directory})",
        user_ids=log.user_ids,
        item_ids=log.item_ids,
        ts=log.ts,
        catalog=ml.item_ids,
        vectors=ml.vectors,
        titles=ml.titles,
        genres=movielens_genres(directory),
        spec=WindowSpec.parse(window, lag, "1d"),
        group_label="genre",
    )


def synthetic_data(events: int, users: int, days: float, window: str, lag: str) -> DemoData:
    from offline.datasets import InteractionLog  # noqa: PLC0415
    from offline.synthetic import GENRES, SyntheticSpec, SyntheticStream  # noqa: PLC0415

    spec = SyntheticSpec(users=users, events=events, days=days, start=1_700_000_000.0)
    stream = SyntheticStream(spec)
    chunks = list(stream.chunks())
    log = InteractionLog(
        user_ids=np.concatenate([c.user_ids for c in chunks]),
        item_ids=np.concatenate([c.item_ids for c in chunks]),
        ts=np.concatenate([c.ts for c in chunks]),
        weights=np.concatenate([c.weights for c in chunks]),
    ).sorted_by_time()
    cat = stream.catalog
    return DemoData(
        user_ids=log.user_ids,
        item_ids=log.item_ids,
        ts=log.ts,
        name=f"synthetic ({events:,} events, {users:,} users, {len(cat.item_ids):,} items)",
        catalog=cat.item_ids,
        vectors=cat.vectors,
        titles=cat.titles,
        genres={i: (GENRES[g],) for i, g in zip(cat.item_ids, cat.genre.tolist(), strict=True)},
        spec=WindowSpec.parse(window, lag, "1d"),
        group_label="cluster",
    )
