"""Turn a batch of raw ``interactions`` records into engine input plus dead letters."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from lte_core.engine import EventColumns
from lte_core.events import EventRules, Reason, Rejection, parse_interaction
from streams.dead_letter import DeadLetter


class RawRecord(Protocol):
    """The fields of an aiokafka ``ConsumerRecord`` that validation reads."""

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...

    @property
    def offset(self) -> int: ...

    @property
    def timestamp(self) -> int: ...


@dataclass(frozen=True, slots=True)
class ValidBatch:
    """Valid events grouped by user (``users[i]`` owns ``events.seg[i]:events.seg[i+1]``,
    in offset order), their arrival times (record timestamps, seconds), and the rest."""

    users: list[bytes]
    events: EventColumns
    arrival: npt.NDArray[np.float64]
    dead: list[DeadLetter] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)


class BatchValidator:
    def __init__(self, rows: Mapping[str, int], rules: EventRules, topic: str) -> None:
        self._rows = rows
        self._rules = rules
        self._topic = topic

    def validate(self, records: Sequence[RawRecord], partition: int, now: float) -> ValidBatch:
        group_of: dict[bytes, int] = {}
        users: list[bytes] = []
        gid: list[int] = []
        items: list[int] = []
        ts: list[float] = []
        weights: list[float] = []
        offsets: list[int] = []
        arrival: list[float] = []
        dead: list[DeadLetter] = []
        rejected: Counter[str] = Counter()
        rows = self._rows
        rules = self._rules
        for record in records:
            parsed = parse_interaction(record.key, record.value, now, rules)
            if not isinstance(parsed, Rejection):
                row = rows.get(parsed.item_id)
                if row is not None:
                    user = record.key
                    assert user is not None  # parse_interaction checked key == user_id
                    g = group_of.get(user)
                    if g is None:
                        g = group_of[user] = len(users)
                        users.append(user)
                    gid.append(g)
                    items.append(row)
                    ts.append(parsed.ts)
                    weights.append(parsed.weight)
                    offsets.append(record.offset)
                    arrival.append(record.timestamp / 1000.0)
                    continue
                parsed = Rejection(
                    Reason.UNKNOWN_ITEM,
                    f"item_id: {parsed.item_id!r} is not in "
                    "the basis; append it with `lte basis append`",
                )
            rejected[parsed.reason] += 1
            dead.append(
                DeadLetter.of(
                    parsed,
                    key=record.key,
                    value=record.value,
                    topic=self._topic,
                    partition=partition,
                    offset=record.offset,
                    timestamp_ms=record.timestamp,
                )
            )
        order = np.argsort(np.asarray(gid, dtype=np.int64), kind="stable")
        seg = np.zeros(len(users) + 1, dtype=np.int64)
        np.cumsum(np.bincount(np.asarray(gid, dtype=np.int64), minlength=len(users)), out=seg[1:])
        return ValidBatch(
            users=users,
            events=EventColumns(
                seg=seg,
                items=np.asarray(items, dtype=np.uint32)[order],
                ts=np.asarray(ts, dtype=np.float64)[order],
                weights=np.asarray(weights, dtype=np.float32)[order],
                offsets=np.asarray(offsets, dtype=np.int64)[order],
            ),
            arrival=np.asarray(arrival, dtype=np.float64)[order],
            dead=dead,
            rejected=rejected,
        )
