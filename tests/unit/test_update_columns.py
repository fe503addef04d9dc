"""The refresher's columnar batch (lte_core/update_columns.py): coalescing, entry encoding and
batched drift, each against a brute-force model over update objects."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from lte_core.update import LTEUpdate
from lte_core.update_columns import UpdateColumns, newest_per_key
from serving.drift import PopulationDrift
from serving.metrics import RefresherMetrics
from serving.online_store import StoredLTE, StoreKey
from serving.store_format import decode_replaced, encode_entries, encode_entry, replaced_parts

small = st.integers(0, 3).map(float)


@st.composite
def update_rows(draw: st.DrawFn) -> LTEUpdate:
    """Few users, pairs and order keys, so keys repeat and order keys tie; with and without
    a version, emptied windows, identity and K < d coefficients."""
    empty = draw(st.booleans()) and draw(st.booleans())
    d = draw(st.sampled_from([2, 3]))
    vector = None if empty else np.array(draw(st.lists(small, min_size=d, max_size=d)), "<f4")
    coefficients = None
    if vector is not None:
        coefficients = vector if draw(st.booleans()) else vector[:1].copy()
    return LTEUpdate(
        user_id=draw(st.sampled_from(["a", "b", "c", "ü"])),
        basis_version=draw(st.sampled_from(["b1", "b2"])),
        encoder=draw(st.sampled_from(["mean", "recency:30d"])),
        as_of=draw(small),
        window_start=draw(small),
        window_end=draw(small),
        n_events=0 if vector is None else draw(st.integers(1, 2**40)),
        weight_sum=draw(small),
        coefficients=coefficients,
        vector=vector,
        due_at=draw(small),
        produced_at=draw(st.floats(0, 1e9)),
        version=draw(st.none() | st.tuples(st.integers(-2, 2), st.integers(0, 2))),
    )


batches = st.lists(update_rows(), max_size=40)


@given(batches)
def test_the_newest_row_per_key_wins_whatever_the_order(batch: list[LTEUpdate]) -> None:
    """Brute force: per key, scan the rows in order and keep a row when its order key is not
    older than the kept one's (the later row on a tie); every other row is a duplicate (same
    order key as the winner) or stale."""
    winners: dict[StoreKey, int] = {}
    for i, update in enumerate(batch):
        key = StoreKey.of(update)
        if key not in winners or update.order_key() >= batch[winners[key]].order_key():
            winners[key] = i
    losers = [i for i in range(len(batch)) if i not in set(winners.values())]
    duplicates = sum(
        batch[i].order_key() == batch[winners[StoreKey.of(batch[i])]].order_key() for i in losers
    )
    got = newest_per_key(UpdateColumns.of(batch))
    assert sorted(got.rows.tolist()) == sorted(winners.values())
    assert len(set(got.rows.tolist())) == len(got.rows)
    assert (got.duplicates, got.stale) == (duplicates, len(losers) - duplicates)


@given(batches, st.randoms(use_true_random=False))
def test_the_winners_do_not_depend_on_the_batch_order(batch: list[LTEUpdate], rng: object) -> None:
    """Shuffled, the same keys end with the same order keys (ties may pick another row with
    the same order key, which the store treats as the same entry)."""
    shuffled = list(batch)
    rng.shuffle(shuffled)  # type: ignore[attr-defined]

    def newest(rows: list[LTEUpdate]) -> dict[StoreKey, tuple[int, float, float]]:
        got = newest_per_key(UpdateColumns.of(rows)).rows.tolist()
        return {StoreKey.of(rows[i]): rows[i].order_key() for i in got}

    assert newest(batch) == newest(shuffled)


@given(batches, st.floats(0, 2e9))
def test_entries_of_a_batch_are_those_of_each_update(
    batch: list[LTEUpdate], stored_at: float
) -> None:
    columns = UpdateColumns.of(batch)
    assert encode_entries(columns, stored_at) == [encode_entry(u, stored_at) for u in batch]
    for got, want in zip(columns.rows(), batch, strict=True):
        assert got.to_dict().keys() == want.to_dict().keys()
        assert encode_entry(got, stored_at) == encode_entry(want, stored_at)


def test_replaced_parts_skip_what_is_not_an_entry() -> None:
    vector = np.array([1, 2], "<f4")
    update = LTEUpdate("u", "b", "e", 1.0, 0.0, 1.0, 2, 1.0, vector[:1], vector, 1.0, 1.0, (3, 4))
    entry = encode_entry(update, 7.5)
    parts = replaced_parts([entry, None, b"junk", entry[:-1]])
    assert parts.stored_at[0] == 7.5 and np.isnan(parts.stored_at[1:]).all()
    assert parts.vector == [np.array([1, 2], "<f4").tobytes(), None, None, None]


@given(
    st.lists(
        st.tuples(update_rows(), st.floats(0, 2e9), st.sampled_from(["whole", "cut", "none"])),
        max_size=30,
    ),
    st.sampled_from([b"junk", b"\x03" + bytes(100), b"\x02" + bytes(8)]),
)
def test_replaced_parts_read_every_value_as_its_entry_does(
    rows: list[tuple[LTEUpdate, float, str]], foreign: bytes
) -> None:
    """Mixed formats (1, 2, 3, emptied), truncated entries and foreign values, against the
    entry decoder value by value: what it cannot decode is treated as no entry."""
    previous: list[bytes | None] = [foreign]
    for update, stored_at, kind in rows:
        entry = encode_entry(update, stored_at)
        previous.append(None if kind == "none" else entry[:-1] if kind == "cut" else entry)
    parts = replaced_parts(previous)
    for i, data in enumerate(previous):
        stored = None if data is None else decode_replaced(StoreKey("b", "e", "u"), data)
        if stored is None:
            assert np.isnan(parts.stored_at[i]) and parts.vector[i] is None, i
            continue
        assert parts.stored_at[i] == stored.stored_at
        vector = stored.update.vector
        assert parts.vector[i] == (None if vector is None else vector.astype("<f4").tobytes())


START = 1000.0


@given(
    before=st.lists(update_rows(), max_size=10),
    stream=st.lists(st.lists(update_rows(), max_size=12), max_size=6),
    reference_size=st.integers(1, 6),
    restart_after=st.integers(0, 6),
)
def test_batched_drift_equals_update_by_update(
    before: list[LTEUpdate],
    stream: list[list[LTEUpdate]],
    reference_size: int,
    restart_after: int,
) -> None:
    """Batches applied to a model store: observe_batch on the columns leaves the same
    gauges as observe() called for each applied update in order."""

    def drift() -> tuple[PopulationDrift, CollectorRegistry]:
        registry = CollectorRegistry()
        metrics = RefresherMetrics.create(registry)
        return PopulationDrift(
            metrics, pinned=None, reference_size=reference_size, started_at=START
        ), registry

    (one, one_registry), (batched, batched_registry) = drift(), drift()
    stored = {StoreKey.of(u): StoredLTE(u, START - 50) for u in before}
    for step, batch in enumerate(stream):
        now = START + 1 + step
        if step == restart_after:
            one.restart(now - 0.5)
            batched.restart(now - 0.5)
        applied, previous = [], []
        for update in batch:
            key = StoreKey.of(update)
            old = stored.get(key)
            fresh = old is None or update.order_key() >= old.update.order_key()
            applied.append(fresh)
            previous.append(encode_entry(old.update, old.stored_at) if fresh and old else None)
            if fresh:
                one.observe(update, old)
                stored[key] = StoredLTE(update, now)
        batched.observe_batch(
            UpdateColumns.of(batch), np.array(applied, bool), replaced_parts(previous)
        )
    one.publish()
    batched.publish()
    for name in ("lte_population_users", "lte_population_drift"):
        for basis in ("b1", "b2"):
            for encoder in ("mean", "recency:30d"):
                labels = {"basis_version": basis, "encoder": encoder}
                want = one_registry.get_sample_value(name, labels)
                got = batched_registry.get_sample_value(name, labels)
                assert (got is None) == (want is None), (name, labels)
                if want is not None:
                    assert got == pytest.approx(want, abs=1e-9), (name, labels)
