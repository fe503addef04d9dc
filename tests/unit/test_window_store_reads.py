"""The RocksDB window store's batched reads against plain references: range reads (scanned
while dense, sought while scattered, at every scan size) equal the in-memory store's, head
reads equal point lookups, and a sweep that resumes the due index where it stopped finds
exactly the users due, tombstones and all."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rocksdict import WriteBatch

from lte_core.engine import FROM_START, RangeRequests
from lte_core.memory_store import MemoryWindowStore
from streams import window_store
from streams.window_store import (
    DUE,
    HEAD,
    WindowStore,
    _event_records,
    _event_values,
    due_key,
)

USERS = [b"a", b"b", b"ab", b"ba", b"u1", b"u10", b"u2", b"\xc3\xbc"]

#: numeric ids of mixed lengths: due order (raw bytes) and event-key order (length first)
#: differ, so a sweep's users come in several runs of the event region
NUMBERED = [b"u%d" % i for i in range(60)]
#: the window store's scan sizes (first, largest, adjacent run), from one key per scan up
SCAN_SIZES = st.sampled_from([(1, 1, 1), (2, 4, 2), (3, 7, 8), (256, 4096, 8)])


@contextlib.contextmanager
def scan_sizes(sizes: tuple[int, int, int]) -> Iterator[None]:
    """The window store's scan sizes for one example (first, largest, adjacent run)."""
    first, most, run = sizes
    with pytest.MonkeyPatch.context() as patch:
        for name, value in (
            ("_EVENT_SCAN_FIRST", first),
            ("_HEAD_SCAN_FIRST", first),
            ("_EVENT_SCAN_MAX", most),
            ("_HEAD_SCAN_MAX", most),
            ("_HEAD_SCAN_MIN", 1),
            ("_ADJACENT_RUN", run),
        ):
            patch.setattr(window_store, name, value)
        yield


def stored_events(users: int, buckets: tuple[int, int], size: int) -> st.SearchStrategy[Any]:
    """Events ``(user, bucket, offset, item, weight)``, one per user, bucket and offset."""
    return st.lists(
        st.tuples(
            st.integers(0, users - 1),
            st.integers(*buckets),
            st.integers(0, 10**6),
            st.integers(0, 9),
            st.floats(0.5, 5.0, width=32),
        ),
        max_size=size,
        unique_by=lambda e: (e[0], e[1], e[2]),
    )


def range_requests(users: int, bounds: tuple[int, int], size: int) -> st.SearchStrategy[Any]:
    """Requests ``(user, lo, hi)``, empty and reversed ranges included."""
    return st.lists(
        st.tuples(
            st.integers(0, users - 1),
            st.one_of(st.just(int(FROM_START)), st.integers(*bounds)),
            st.integers(*bounds),
        ),
        max_size=size,
    )


@settings(max_examples=60, deadline=None)
@given(stored_events(len(USERS), (-5, 40), 60), range_requests(len(USERS), (-10, 45), 25))
def test_range_reads_equal_the_reference(
    stored: list[tuple[int, int, int, int, float]], asked: list[tuple[int, int, int]]
) -> None:
    assert_range_reads_equal_the_reference(USERS, stored, asked)


def assert_range_reads_equal_the_reference(
    users: list[bytes],
    stored: list[tuple[int, int, int, int, float]],
    asked: list[tuple[int, int, int]],
) -> None:
    """Events ``(user, bucket, offset, item, weight)`` in RocksDB (between keys of other
    regions) and in the in-memory store; requests ``(user, lo, hi)`` read from both."""
    memory = MemoryWindowStore()
    for u, bucket, offset, item, weight in stored:
        memory.events.setdefault(users[u], []).append((bucket, offset, item, weight))
    for records in memory.events.values():
        records.sort()
    req = RangeRequests(
        user=np.array([a[0] for a in asked], dtype=np.int64),
        lo=np.array([a[1] for a in asked], dtype=np.int64),
        hi=np.array([a[2] for a in asked], dtype=np.int64),
    )
    with tempfile.TemporaryDirectory() as tmp:
        store = WindowStore(tmp)
        try:
            batch = WriteBatch(raw_mode=True)
            if stored:
                cols = np.array([e[:3] for e in stored], dtype=np.int64)
                keys = _event_records(users, cols[:, 0], cols[:, 1], cols[:, 2])
                values = _event_values(
                    np.array([e[3] for e in stored], dtype=np.uint32),
                    np.array([e[4] for e in stored], dtype=np.float32),
                )
                for key, value in zip(keys, values, strict=True):
                    batch.put(key, value)
            batch.put(b"d-before-the-events", b"")
            batch.put(HEAD + b"after-the-events", b"")
            store.write(batch)
            got = store.read_ranges(users, req)
        finally:
            store.close()
    want = memory.read_ranges(users, req)
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


@settings(max_examples=40, deadline=None)
@given(
    st.dictionaries(st.binary(min_size=1, max_size=3), st.binary(max_size=40), max_size=400),
    st.lists(st.binary(min_size=1, max_size=3), max_size=120),
    st.lists(st.booleans(), max_size=400),
    st.sampled_from([(1, 1, 1), (2, 4, 2), (3, 7, 8), (64, 1024, 8)]),
)
def test_head_reads_equal_point_lookups(
    heads: dict[bytes, bytes],
    strangers: list[bytes],
    asked_flags: list[bool],
    sizes: tuple[int, int, int],
) -> None:
    """Adjacent users are scanned, and once a scan returns mostly heads nobody asked for
    the rest come from one multi-get: at every scan size, every path returns each user's
    head or None, in the order asked (a few unknown users mixed in, some asked twice)."""
    stored = sorted(heads)
    # a run of adjacent users, then users picked here and there (the scattered path)
    asked = [u for u, flag in zip(stored, asked_flags, strict=False) if flag]
    asked += strangers + stored[::7] + asked[:3]
    with tempfile.TemporaryDirectory() as tmp:
        store = WindowStore(tmp)
        try:
            batch = WriteBatch(raw_mode=True)
            for user, head in heads.items():
                batch.put(HEAD + user, head)
            batch.put(b"i-after-the-heads", b"")
            store.write(batch)
            with scan_sizes(sizes):
                got = store.read_heads(asked)
                scattered = store.read_heads(asked[::-1])
        finally:
            store.close()
    assert got == [heads.get(u) for u in asked]
    assert scattered == [heads.get(u) for u in asked[::-1]]


def test_head_reads_fall_back_to_one_multi_get_when_scattered() -> None:
    """Past the free seeks, scattered users are read by the multi-get (same answers)."""
    users = [b"u%05d" % i for i in range(2000)]
    with tempfile.TemporaryDirectory() as tmp:
        store = WindowStore(tmp)
        try:
            batch = WriteBatch(raw_mode=True)
            for i, user in enumerate(users):
                if i % 3:
                    batch.put(HEAD + user, user * 3)
            store.write(batch)
            asked = users[::5]  # every one needs a seek
            got = store.read_heads(asked)
        finally:
            store.close()
    assert got == [None if users.index(u) % 3 == 0 else u * 3 for u in asked]


@settings(max_examples=60, deadline=None)
@given(
    stored_events(len(NUMBERED), (-3, 12), 150),
    range_requests(len(NUMBERED), (-4, 14), 80),
    SCAN_SIZES,
    st.booleans(),
)
def test_scanned_range_reads_equal_the_reference(
    stored: list[tuple[int, int, int, int, float]],
    asked: list[tuple[int, int, int]],
    sizes: tuple[int, int, int],
    sweep_like: bool,
) -> None:
    """Every scan size, from one key per scan up: requests answered by scans, by seeks
    and by both in one call, each with its events and the next stored bucket."""
    if sweep_like:  # a sweep's requests: every user, everything below a window start
        asked = [(u, int(FROM_START), 5) for u in range(len(NUMBERED))] + asked
    with scan_sizes(sizes):
        assert_range_reads_equal_the_reference(NUMBERED, stored, asked)
