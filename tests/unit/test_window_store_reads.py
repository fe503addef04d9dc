"""The RocksDB window store's batched reads against plain references: range reads (visited in
key order, seeks skipped) equal the in-memory store's, and a sweep that resumes the due
index where it stopped finds exactly the users due, tombstones and all."""

from __future__ import annotations

import tempfile

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from rocksdict import WriteBatch

from lte_core.engine import FROM_START, RangeRequests
from lte_core.memory_store import MemoryWindowStore
from streams.window_store import (
    DUE,
    WindowStore,
    _event_records,
    _event_values,
    due_key,
)

USERS = [b"a", b"b", b"ab", b"ba", b"u1", b"u10", b"u2", b"\xc3\xbc"]

events = st.lists(
    st.tuples(
        st.integers(0, len(USERS) - 1),
        st.integers(-5, 40),
        st.integers(0, 10**6),
        st.integers(0, 9),
        st.floats(0.5, 5.0, width=32),
    ),
    max_size=60,
    unique_by=lambda e: (e[0], e[1], e[2]),
)
requests = st.lists(
    st.tuples(
        st.integers(0, len(USERS) - 1),
        st.one_of(st.just(int(FROM_START)), st.integers(-10, 45)),
        st.integers(-10, 45),
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(events, requests)
def test_range_reads_equal_the_reference(
    stored: list[tuple[int, int, int, int, float]], asked: list[tuple[int, int, int]]
) -> None:
    memory = MemoryWindowStore()
    for u, bucket, offset, item, weight in stored:
        memory.events.setdefault(USERS[u], []).append((bucket, offset, item, weight))
    for records in memory.events.values():
        records.sort()
    with tempfile.TemporaryDirectory() as tmp:
        store = WindowStore(tmp)
        try:
            if stored:
                cols = np.array([e[:3] for e in stored], dtype=np.int64)
                keys = _event_records(USERS, cols[:, 0], cols[:, 1], cols[:, 2])
                values = _event_values(
                    np.array([e[3] for e in stored], dtype=np.uint32),
                    np.array([e[4] for e in stored], dtype=np.float32),
                )
                batch = WriteBatch(raw_mode=True)
                for key, value in zip(keys, values, strict=True):
                    batch.put(key, value)
                store.write(batch)
            req = RangeRequests(
                user=np.array([a[0] for a in asked], dtype=np.int64),
                lo=np.array([a[1] for a in asked], dtype=np.int64),
                hi=np.array([a[2] for a in asked], dtype=np.int64),
            )
            got = store.read_ranges(USERS, req)
        finally:
            store.close()
    want = memory.read_ranges(USERS, req)
    for name in ("request", "bucket", "offset", "item", "weight", "next_bucket"):
        assert np.array_equal(getattr(got, name), getattr(want, name)), name


@settings(max_examples=40, deadline=None)
@given(
    # one due entry per user, as in the index
    st.lists(
        st.tuples(st.integers(0, 30), st.binary(min_size=1, max_size=3)),
        max_size=50,
        unique_by=lambda e: e[1],
    ),
    st.integers(0, 30),
    st.integers(1, 7),
)
def test_a_resumed_due_scan_finds_every_due_user_once(
    dues: list[tuple[int, bytes]], now: int, limit: int
) -> None:
    index = sorted(dues)
    with tempfile.TemporaryDirectory() as tmp:
        store = WindowStore(tmp)
        try:
            batch = WriteBatch(raw_mode=True)
            for due, user in index:
                batch.put(due_key(due, user), b"")
            batch.put(b"e-after-the-index", b"")
            store.write(batch)
            seen: list[bytes] = []
            after = DUE
            while True:
                users, after = store.due_users(now + 0.5, limit, after)
                # a sweep deletes what it visits: the next scan steps over tombstones
                gone = WriteBatch(raw_mode=True)
                for due, user in index:
                    if user in users:
                        gone.delete(due_key(due, user))
                store.write(gone)
                seen += users
                if len(users) < limit:
                    break
        finally:
            store.close()
    assert seen == [user for due, user in index if due <= now]
