"""The sweep's RocksDB reads and due-index writes against references: scans of the head and
event regions (any scan size, dense or scattered users) return what point lookups and the
in-memory store return, and sweep steps that clear the visited due-index span by one range
tombstone leave exactly the index the heads imply."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import cast

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rocksdict import WriteBatch

from lte_core.engine import FROM_START, NEVER, EventColumns, RangeRequests, WindowEngine, due_times
from lte_core.head import parse_heads
from lte_core.memory_store import MemoryWindowStore
from lte_core.window import WindowSpec
from streams import window_store
from streams.window_store import DUE, HEAD, WindowStore, _event_records, _event_values

#: numeric ids of mixed lengths: due order (raw bytes) and event-key order (length first)
#: differ, so a sweep's users come in several runs of the event region
USERS = [b"u%d" % i for i in range(60)]
SCAN_SIZES = st.sampled_from([(1, 1, 1), (2, 4, 2), (3, 7, 8), (256, 4096, 8)])


@pytest.fixture(autouse=True)
def _restore_scan_sizes() -> object:
    saved = (
        window_store._EVENT_SCAN_FIRST,
        window_store._EVENT_SCAN_MAX,
        window_store._HEAD_SCAN_FIRST,
        window_store._HEAD_SCAN_MAX,
        window_store._HEAD_SCAN_MIN,
        window_store._ADJACENT_RUN,
    )
    yield
    (
        window_store._EVENT_SCAN_FIRST,
        window_store._EVENT_SCAN_MAX,
        window_store._HEAD_SCAN_FIRST,
        window_store._HEAD_SCAN_MAX,
        window_store._HEAD_SCAN_MIN,
        window_store._ADJACENT_RUN,
    ) = saved


def _scan_sizes(sizes: tuple[int, int, int]) -> None:
    first, most, run = sizes
    window_store._EVENT_SCAN_FIRST = window_store._HEAD_SCAN_FIRST = first
    window_store._EVENT_SCAN_MAX = window_store._HEAD_SCAN_MAX = most
    window_store._HEAD_SCAN_MIN = 1
    window_store._ADJACENT_RUN = run


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, len(USERS) - 1),
            st.integers(-3, 12),
            st.integers(0, 10**4),
            st.integers(0, 9),
            st.floats(0.5, 5.0, width=32),
        ),
        max_size=150,
        unique_by=lambda e: (e[0], e[1], e[2]),
    ),
    st.lists(
        st.tuples(
            st.integers(0, len(USERS) - 1),
            st.one_of(st.just(int(FROM_START)), st.integers(-4, 14)),
            st.integers(-4, 14),
        ),
        max_size=80,
    ),
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
    _scan_sizes(sizes)
    if sweep_like:  # a sweep's requests: every user, everything below a window start
        asked = [(u, int(FROM_START), 5) for u in range(len(USERS))] + asked
    memory = MemoryWindowStore()
    for u, bucket, offset, item, weight in stored:
        memory.events.setdefault(USERS[u], []).append((bucket, offset, item, weight))
    for records in memory.events.values():
        records.sort()
    with tempfile.TemporaryDirectory() as tmp:
        store = WindowStore(tmp)
        try:
            batch = WriteBatch(raw_mode=True)
            if stored:
                cols = np.array([e[:3] for e in stored], dtype=np.int64)
                keys = _event_records(USERS, cols[:, 0], cols[:, 1], cols[:, 2])
                values = _event_values(
                    np.array([e[3] for e in stored], dtype=np.uint32),
                    np.array([e[4] for e in stored], dtype=np.float32),
                )
                for key, value in zip(keys, values, strict=True):
                    batch.put(key, value)
            batch.put(b"d-before-the-events", b"")
            batch.put(HEAD + b"after-the-events", b"")
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
    st.dictionaries(st.binary(min_size=1, max_size=2), st.binary(max_size=20), max_size=300),
    st.lists(st.binary(min_size=1, max_size=2), max_size=200),
    SCAN_SIZES,
)
def test_scanned_head_reads_equal_point_lookups(
    heads: dict[bytes, bytes], asked: list[bytes], sizes: tuple[int, int, int]
) -> None:
    _scan_sizes(sizes)
    asked = asked + sorted(heads)[::2]
    with tempfile.TemporaryDirectory() as tmp:
        store = WindowStore(tmp)
        try:
            batch = WriteBatch(raw_mode=True)
            for user, head in heads.items():
                batch.put(HEAD + user, head)
            batch.put(b"i-after-the-heads", b"")
            store.write(batch)
            got = store.read_heads(asked)
        finally:
            store.close()
    assert got == [heads.get(u) for u in asked]


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, len(USERS) - 1), st.integers(0, 9), st.integers(-12, 0)),
        min_size=1,
        max_size=120,
    ),
    st.integers(1, 25),
    SCAN_SIZES,
)
def test_sweep_steps_leave_exactly_the_due_index_the_heads_imply(
    events: list[tuple[int, int, int]], limit: int, sizes: tuple[int, int, int]
) -> None:
    """Events over a dozen buckets, then the clock moves bucket by bucket and each pass
    sweeps in steps of ``limit`` users, clearing the span each step visited: after every
    step the index holds one key per head, at the due time the head implies (oracle:
    :func:`due_times` of every stored head), and a pass sweeps exactly the users due."""
    _scan_sizes(sizes)
    spec = WindowSpec(window=3 * 10, lag=10, bucket=10)
    vectors = np.random.default_rng(0).standard_normal((10, 2)).astype(np.float32)
    engine = WindowEngine(spec, vectors)
    t0 = 1000.0
    with tempfile.TemporaryDirectory() as tmp:
        store = WindowStore(tmp)
        try:
            by_user: dict[int, list[tuple[int, int, int]]] = {}
            for offset, (u, item, dt) in enumerate(events):
                by_user.setdefault(u, []).append((item, dt, offset))
            users = [USERS[u] for u in by_user]
            rows = list(by_user.values())
            cols = EventColumns(
                seg=np.cumsum([0] + [len(r) for r in rows]).astype(np.int64),
                items=np.array([e[0] for r in rows for e in r], dtype=np.uint32),
                ts=np.array([t0 + 10 * e[1] for r in rows for e in r], dtype=np.float64),
                weights=np.ones(len(events), dtype=np.float32),
                offsets=np.array([e[2] for r in rows for e in r], dtype=np.int64),
            )
            write = store.begin()
            write.engine_result(users, engine.process(store, users, cols, t0))
            write.commit()
            for now in np.arange(t0, t0 + 200, 10.0).tolist():
                due_now = _index(store, spec)
                swept: list[bytes] = []
                first = DUE
                while True:
                    batch_users, after = store.due_users(now, limit, first)
                    if not batch_users:
                        break
                    result = engine.process(
                        store, batch_users, EventColumns.empty(len(batch_users)), now
                    )
                    write = store.begin()
                    write.clear_due(first, after)
                    write.engine_result(batch_users, result, due_cleared=True)
                    write.commit()
                    swept += batch_users
                    assert _due_keys(store) == _index(store, spec)
                    first = after
                assert sorted(swept) == sorted(u for due, u in due_now if due <= now)
            assert _due_keys(store) == set() == _index(store, spec)
        finally:
            store.close()


def _due_keys(store: WindowStore) -> set[tuple[int, bytes]]:
    keys = _keys(store, DUE)
    return {(int.from_bytes(k[1:9], "big") - (1 << 63), k[9:]) for k in keys}


def _index(store: WindowStore, spec: WindowSpec) -> set[tuple[int, bytes]]:
    """The due index recomputed from every stored head."""
    users = [k[1:] for k in _keys(store, HEAD)]
    heads = parse_heads(store.read_heads(users), 2, False)
    due = due_times(spec, heads).tolist()
    return {(d, u) for d, u in zip(due, users, strict=True) if d != NEVER}


def _keys(store: WindowStore, prefix: bytes) -> list[bytes]:
    keys = cast(Iterator[bytes], store._db.keys(from_key=prefix))
    return [k for k in keys if k.startswith(prefix)]
