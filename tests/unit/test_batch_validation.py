"""The column-wise validation of a whole chunk agrees with the record-by-record reference."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from lte_core.events import EventRules
from streams.validation import BatchValidator, ValidBatch

NOW = 1_700_000_000.0
ROWS = {f"i{k}": k for k in range(5)}


class Record(NamedTuple):
    key: bytes | None
    value: bytes | None
    offset: int
    timestamp: int


def _plain(user: str, item: str, ts: float | int) -> tuple[bytes, bytes]:
    return user.encode(), orjson.dumps({"user_id": user, "item_id": item, "ts": ts})


users = st.sampled_from(["a", "b", "ü", "c" * 256])
items = st.sampled_from(sorted(ROWS))
stamps = st.one_of(
    st.floats(NOW - 1e6, NOW, allow_nan=False), st.integers(int(NOW) - 10**6, int(NOW))
)
plain = st.builds(_plain, users, items, stamps)
odd = st.one_of(
    st.builds(_plain, users, st.just("unknown"), stamps),
    st.builds(_plain, users, items, st.just(NOW + 10 * 3600.0)),
    st.builds(_plain, st.just("c" * 257), items, stamps),
    st.builds(lambda u: (b"other", _plain(u, "i1", NOW)[1]), users),
    st.builds(lambda k: (k, orjson.dumps({"user_id": "a", "item_id": "i1", "ts": True})), users),
    st.builds(
        lambda u: (
            u.encode(),
            orjson.dumps({"user_id": u, "item_id": "i1", "ts": NOW, "weight": 2}),
        ),
        users,
    ),
    st.sampled_from([(b"a", b"not json"), (b"a", None), (None, b"{}"), (b"a", b"[1,2,3]")]),
    st.builds(lambda u: (u.encode(), b'{"user_id":"a","item_id":"i1","ts":1e400}'), users),
)


def _same(fast: ValidBatch, slow: ValidBatch) -> None:
    assert fast.users == slow.users
    for name in ("seg", "items", "ts", "weights", "offsets"):
        a, b = getattr(fast.events, name), getattr(slow.events, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert np.array_equal(fast.arrival, slow.arrival)
    assert [d.reason for d in fast.dead] == [d.reason for d in slow.dead]
    assert fast.rejected == slow.rejected


@settings(max_examples=150)
@given(st.lists(st.one_of(plain, plain, odd), min_size=1, max_size=30))
def test_chunk_validation_equals_record_by_record(pairs: list[tuple[bytes, bytes]]) -> None:
    validator = BatchValidator(ROWS, EventRules(), "interactions")
    records = [Record(k, v, 100 + i, 1_700_000_000_000 + i) for i, (k, v) in enumerate(pairs)]
    _same(validator.validate(records, 0, NOW), validator.validate_each(records, 0, NOW))


@given(st.lists(plain, min_size=1, max_size=30))
def test_plain_chunks_take_the_column_path(pairs: list[tuple[bytes, bytes]]) -> None:
    validator = BatchValidator(ROWS, EventRules(), "interactions")
    records = [Record(k, v, i, 1_700_000_000_000) for i, (k, v) in enumerate(pairs)]
    fast = validator._validate_plain(records, NOW)
    assert fast is not None
    _same(fast, validator.validate_each(records, 0, NOW))
