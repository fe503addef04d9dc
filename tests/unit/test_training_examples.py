"""Offline examples against the stream's reference state and brute-force sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lte_core.errors import ConfigError
from lte_core.state import LaggedWindow
from lte_core.window import WindowSpec
from offline.datasets import DatasetError, read_interaction_log
from offline.training_examples import (
    TARGETS_AFTER_CLOCK,
    TARGETS_AFTER_WINDOW,
    ExampleSpec,
    IndexedLog,
    Ragged,
    build_examples,
    time_split,
)
from tests.unit.interaction_logs import DAY, T0, catalog, random_log


def _reference(log: IndexedLog, user: int, clock: float, spec: WindowSpec) -> LaggedWindow:
    """The user's window as the one-user stream state holds it after seeing everything."""
    mine = log.user == user
    state = LaggedWindow(spec, 8)
    state.apply(log.item[mine], log.ts[mine], log.weight[mine], VECTORS, clock)
    return state


BASIS = catalog(1)
VECTORS = BASIS.item_vectors


@settings(max_examples=25)
@given(
    seed=st.integers(0, 10_000),
    window_days=st.sampled_from([7, 30, 400]),
    lag_days=st.sampled_from([0, 3, 14]),
    horizon_days=st.sampled_from([1, 7, 21]),
    targets_after=st.sampled_from([TARGETS_AFTER_WINDOW, TARGETS_AFTER_CLOCK]),
    half_life=st.sampled_from([None, 2 * DAY, 30 * DAY]),
)
def test_examples_match_the_stream_state_and_brute_force_targets(  # noqa: PLR0917 - strategies
    seed: int,
    window_days: int,
    lag_days: int,
    horizon_days: int,
    targets_after: str,
    half_life: int | None,
) -> None:
    log = IndexedLog.from_log(random_log(seed, BASIS, users=15), BASIS)
    window = WindowSpec(window_days * DAY, lag_days * DAY, DAY)
    spec = ExampleSpec(window, horizon_days * DAY, targets_after)
    clocks = [T0 + 40 * DAY, T0 + 40 * DAY + 0.5, T0 + 77 * DAY + 3600]
    examples = build_examples(log, VECTORS, spec, clocks, half_life=half_life)
    found = set(examples.pairs())
    for clock in clocks:
        start = spec.target_start(clock)
        for user in range(len(log.user_ids)):
            mine = log.user == user
            seen = set(log.item[mine & (log.ts < start)].tolist())
            new = set(log.item[mine & (log.ts >= start) & (log.ts < start + spec.horizon)].tolist())
            new -= seen
            state = _reference(log, user, clock, window)
            expected = state.count > 0 and bool(new)
            assert ((user, clock) in found) == expected
            if not expected:
                continue
            i = examples.pairs().index((user, clock))
            assert set(examples.targets.row(i).tolist()) == new
            assert set(examples.seen.row(i).tolist()) == seen
            ref = state.summary(VECTORS, half_life)
            s = examples.summary
            assert s.counts[i] == ref.counts[0]
            np.testing.assert_allclose(s.sums[i], ref.sums[0], rtol=0, atol=1e-9)
            np.testing.assert_allclose(s.weight_sums[i], ref.weight_sums[0], rtol=1e-12)
            if half_life is not None:
                assert s.decayed_sums is not None and ref.decayed_sums is not None
                np.testing.assert_allclose(s.decayed_sums[i], ref.decayed_sums[0], atol=1e-9)


@settings(max_examples=30)
@given(st.integers(0, 1000), st.sampled_from([7, 14]), st.sampled_from([14, 30]))
def test_time_split_never_lets_training_read_the_validation_span(
    seed: int, horizon_days: int, span_days: int
) -> None:
    log = IndexedLog.from_log(random_log(seed, BASIS, users=20), BASIS)
    spec = ExampleSpec(WindowSpec(60 * DAY, 7 * DAY, DAY), horizon_days * DAY)
    until = T0 + 110 * DAY
    split = time_split(spec, log.first_ts, until, stride=DAY, validation_span=span_days * DAY)
    train = build_examples(log.before(until), VECTORS, spec, split.train)
    latest_read = max(
        (spec.target_start(c) + spec.horizon for c in split.train.tolist()), default=-np.inf
    )
    assert latest_read <= split.validation_from
    # Every event a training example reads (window or targets) precedes the validation span.
    for i, (user, clock) in enumerate(train.pairs()):
        mine = (log.user == user) & (log.ts < spec.target_start(clock) + spec.horizon)
        assert log.ts[mine].max() < split.validation_from
        assert len(train.targets.row(i)) > 0
    for clock in split.validation.tolist():
        assert spec.target_start(clock) >= split.validation_from
        assert spec.target_start(clock) + spec.horizon <= until


def test_time_split_refuses_a_validation_span_shorter_than_the_horizon() -> None:
    spec = ExampleSpec(WindowSpec(60 * DAY, 0, DAY), 14 * DAY)
    with pytest.raises(ConfigError, match="--val-span"):
        time_split(spec, T0, T0 + 100 * DAY, stride=DAY, validation_span=7 * DAY)


@given(st.lists(st.lists(st.integers(0, 50), max_size=5), min_size=1, max_size=8), st.data())
def test_ragged_take_selects_rows(rows: list[list[int]], data: st.DataObject) -> None:
    seg = np.cumsum([0, *map(len, rows)]).astype(np.int64)
    ragged = Ragged(seg, np.asarray([v for r in rows for v in r], dtype=np.int64))
    idx = data.draw(st.lists(st.integers(0, len(rows) - 1), max_size=10))
    taken = ragged.take(np.asarray(idx, dtype=np.int64))
    assert [taken.row(j).tolist() for j in range(len(idx))] == [rows[i] for i in idx]
    assert taken.owners().tolist() == [j for j, i in enumerate(idx) for _ in rows[i]]


def test_jsonl_logs_follow_the_event_contract(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    lines = [
        {"user_id": "a", "item_id": "i1", "ts": 10},
        {"user_id": "b", "item_id": "i2", "ts": 11.5, "weight": 2.5, "type": "view"},
    ]
    path.write_bytes(b"\n".join(orjson.dumps(x) for x in lines) + b"\n\n")
    log = read_interaction_log(path)
    assert log.user_ids.tolist() == ["a", "b"]
    assert log.item_ids.tolist() == ["i1", "i2"]
    assert log.ts.tolist() == [10.0, 11.5]
    assert log.weights.tolist() == [1.0, 2.5]
    path.write_bytes(path.read_bytes() + b'{"user_id": "c", "item_id": "i1", "ts": "soon"}\n')
    with pytest.raises(DatasetError, match=r"log.jsonl:4: bad_field: ts"):
        read_interaction_log(path)
    with pytest.raises(DatasetError, match="--log-format"):
        read_interaction_log(tmp_path / "log.csv")


def test_a_long_window_yields_many_examples_at_each_clock() -> None:
    """Guards the property test above against passing on empty example sets."""
    log = IndexedLog.from_log(random_log(0, BASIS, users=15), BASIS)
    spec = ExampleSpec(WindowSpec(400 * DAY, 0, DAY), 21 * DAY)
    clocks = [T0 + 40 * DAY, T0 + 77 * DAY + 3600]
    examples = build_examples(log, VECTORS, spec, clocks)
    assert {c for _, c in examples.pairs()} == set(clocks)
    assert len(examples) >= 6
