"""Sweep steps that clear the due-index span they visited by one range tombstone
(:meth:`streams.window_store.StoreWrite.clear_due`) leave exactly the index the heads imply."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import cast

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lte_core.engine import NEVER, EventColumns, WindowEngine, due_times
from lte_core.head import parse_heads
from lte_core.window import WindowSpec
from streams.window_store import DUE, HEAD, WindowStore

USERS = [b"u%d" % i for i in range(60)]


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, len(USERS) - 1), st.integers(0, 9), st.integers(-12, 0)),
        min_size=1,
        max_size=120,
    ),
    st.integers(1, 25),
)
def test_sweep_steps_leave_exactly_the_due_index_the_heads_imply(
    events: list[tuple[int, int, int]], limit: int
) -> None:
    """Events over a dozen buckets, then the clock moves bucket by bucket and each pass
    sweeps in steps of ``limit`` users, clearing the span each step visited: after every
    step the index holds one key per head, at the due time the head implies (oracle:
    :func:`due_times` of every stored head), and a pass sweeps exactly the users due."""
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
