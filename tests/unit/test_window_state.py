"""Property tests: the lagged-window state against the brute-force oracle (DESIGN 3.2)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lte_core.state import LaggedWindow, state_bytes
from lte_core.window import WindowSpec
from tests import oracle
from tests.oracle import Ev

N_ITEMS = 12


@dataclass
class Model:
    """What the oracle knows: every accepted event and the effective clock."""

    spec: oracle.Spec
    accepted: list[Ev] = field(default_factory=list)
    sent: list[Ev] = field(default_factory=list)
    applied_offsets: set[int] = field(default_factory=set)
    clock: float | None = None


@st.composite
def specs(draw: st.DrawFn) -> WindowSpec:
    bucket = draw(st.sampled_from([1, 2, 5, 60]))
    n = draw(st.integers(1, 10))
    lag = draw(st.integers(0, 4 * bucket + 3))
    return WindowSpec(window=n * bucket, lag=lag, bucket=bucket)


RawEvent = tuple[int, float, float]


@dataclass(frozen=True)
class Step:
    kind: str  # batch | advance | roundtrip | redeliver
    move: float = 0.0
    events: tuple[RawEvent, ...] = ()
    redeliver: int = 0


Scenario = tuple[WindowSpec, npt.NDArray[np.float32], list[Step]]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    spec = draw(specs())
    d = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    vectors = np.random.default_rng(seed).standard_normal((N_ITEMS, d)).astype(np.float32)
    span = spec.window + spec.lag + 2 * spec.bucket
    steps: list[Step] = []
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(
            st.sampled_from(["batch", "batch", "batch", "advance", "roundtrip", "redeliver"])
        )
        if kind in {"batch", "advance"}:
            move = draw(
                st.one_of(
                    st.just(0.0),
                    st.floats(0, 3 * spec.bucket, allow_nan=False),
                    st.floats(span, 3 * span, allow_nan=False),  # jumps past the whole window
                    st.floats(-2 * spec.bucket, 0, allow_nan=False),  # backwards: ignored
                    st.integers(0, 4).map(lambda k: float(k * spec.bucket)),  # on edges
                )
            )
            events = draw(
                st.lists(
                    st.tuples(
                        st.integers(0, N_ITEMS - 1),
                        st.one_of(
                            st.floats(-span, spec.bucket * 3 + spec.lag, allow_nan=False),
                            st.integers(-span, 3).map(lambda k: float(k * spec.bucket)),
                        ),
                        st.sampled_from([1.0, 0.5, 2.5, 1e-3, 1e3, 0.1]),
                    ),
                    max_size=8 if kind == "batch" else 0,
                )
            )
            steps.append(Step(kind, move=move, events=tuple(events)))
        elif kind == "redeliver":
            steps.append(Step(kind, redeliver=draw(st.integers(1, 10))))
        else:
            steps.append(Step(kind))
    return spec, vectors, steps


def _check(state: LaggedWindow, model: Model, vectors: npt.NDArray[np.float32]) -> None:
    assert model.clock is not None
    inside = oracle.in_window(model.spec, model.clock, model.accepted)
    assert state.count == len(inside)
    start, end = oracle.bounds(model.spec, model.clock)
    assert state.end_bucket == end
    stored = [e for e in model.accepted if oracle.bucket_of(e.ts, model.spec.bucket) >= start]
    assert state.n_stored == len(stored)
    total, weight = oracle.weighted_sum(inside, vectors)
    np.testing.assert_allclose(state.sum, total, atol=1e-6, rtol=1e-6)
    assert state.weight_sum == pytest.approx(weight, rel=1e-6, abs=1e-9)
    if inside:
        mean = state.sum / state.weight_sum
        np.testing.assert_allclose(mean, oracle.weighted_mean(inside, vectors), atol=1e-5)
    else:
        assert state.weight_sum == 0.0
        assert not state.sum.any()
    assert state.next_change() == oracle.next_change(model.spec, model.clock, stored)
    assert len(state_bytes_of(state)) == state_bytes(state.d, len(stored), plain=state.plain)


def state_bytes_of(state: LaggedWindow) -> bytes:
    return state.to_bytes()


@settings(max_examples=300)
@given(scenarios())
def test_state_matches_oracle_after_every_step(scenario: Scenario) -> None:
    spec, vectors, steps = scenario
    d = vectors.shape[1]
    model = Model(oracle.Spec(spec.window, spec.lag, spec.bucket))
    state = LaggedWindow(spec, d)
    base = 1_000_000.0
    clock = base
    next_offset = 0
    for step in steps:
        kind = step.kind
        if kind == "roundtrip":
            state = LaggedWindow.from_bytes(state.to_bytes(), spec, d)
            if model.clock is None:
                continue
        elif kind == "redeliver":
            again = model.sent[-step.redeliver :]
            if model.clock is None or not again:
                continue
            outcome = state.apply(
                [e.item for e in again],
                [e.ts for e in again],
                [e.weight for e in again],
                vectors,
                model.clock,
                offsets=[e.offset for e in again],
            )
            assert outcome.duplicate == len(again)
            assert outcome.applied == outcome.late == 0
        else:
            clock = clock + step.move
            model.clock = clock if model.clock is None else max(model.clock, clock)
            if kind == "advance":
                state.advance(clock, vectors)
            else:
                events = []
                for item, rel, weight in step.events:
                    events.append(Ev(item, clock + rel, weight, next_offset))
                    next_offset += 1
                late = [e for e in events if oracle.is_late(model.spec, model.clock, e)]
                outcome = state.apply(
                    [e.item for e in events],
                    [e.ts for e in events],
                    [e.weight for e in events],
                    vectors,
                    clock,
                    offsets=[e.offset for e in events],
                )
                assert outcome.late == len(late)
                assert outcome.duplicate == 0
                assert outcome.applied == len(events) - len(late)
                model.sent.extend(events)
                model.accepted.extend(e for e in events if e not in late)
        _check(state, model, vectors)


@given(scenarios())
def test_one_event_at_a_time_equals_batches(scenario: Scenario) -> None:
    """The per-event path and the batch path are the same function of the stream."""
    spec, vectors, steps = scenario
    d = vectors.shape[1]
    batched, single = LaggedWindow(spec, d), LaggedWindow(spec, d)
    clock = 5_000.0
    for step in steps:
        if step.kind != "batch":
            continue
        raw = step.events
        clock += max(0.0, step.move)
        items = [r[0] for r in raw]
        ts = [clock + r[1] for r in raw]
        ws = [r[2] for r in raw]
        batched.apply(items, ts, ws, vectors, clock)
        single.advance(clock, vectors)
        for i, t, w in zip(items, ts, ws, strict=True):
            single.apply([i], [t], [w], vectors, clock)
        assert batched.count == single.count
        assert batched.n_stored == single.n_stored
        np.testing.assert_allclose(batched.sum, single.sum, atol=1e-9)
        assert batched.next_change() == single.next_change()


def test_event_enters_exactly_at_lag_edge_and_leaves_after_window() -> None:
    spec = WindowSpec(window=3 * 86400, lag=86400, bucket=86400)
    vectors = np.eye(2, dtype=np.float32)
    state = LaggedWindow(spec, 2)
    day = 86400
    ts = 10 * day + 5.0  # bucket 10
    state.apply([0], [ts], [1.0], vectors, now=ts)
    assert state.count == 0 and state.pending == 1
    enter = 11 * day + day  # (b+1)G + L
    assert state.next_change() == enter
    state.advance(enter - 1e-3, vectors)
    assert state.count == 0
    state.advance(enter, vectors)
    assert state.count == 1
    leave = (10 + 3 + 1) * day + day
    assert state.next_change() == leave
    state.advance(leave - 1e-3, vectors)
    assert state.count == 1
    state.advance(leave, vectors)
    assert state.count == 0 and state.is_empty and state.next_change() is None


def test_late_event_is_reported_not_applied() -> None:
    spec = WindowSpec(window=2 * 60, lag=0, bucket=60)
    vectors = np.ones((1, 3), dtype=np.float32)
    state = LaggedWindow(spec, 3)
    outcome = state.apply([0, 0], [1000.0, 1000.0 - 3 * 60], [1.0, 1.0], vectors, now=1000.0)
    assert (outcome.applied, outcome.late) == (1, 1)
    assert state.n_stored == 1


def test_jump_skips_some_pending_events_while_later_ones_enter() -> None:
    """A clock jump can carry an event from 'pending' straight past the window: it must
    never touch the sum, while a later pending event enters."""
    spec = WindowSpec(window=60, lag=120, bucket=60)
    vectors = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    state = LaggedWindow(spec, 2)
    now = 600.0  # end bucket 8
    state.apply([0, 1], [now - 50, now + 20], [1.0, 3.0], vectors, now=now)  # buckets 9, 10
    assert state.pending == 2
    state.advance(now + 3 * 60, vectors)  # end 11, start 10: bucket 9 skipped, 10 enters
    assert state.count == 1
    np.testing.assert_array_equal(state.sum, [0.0, 3.0])
    assert state.weight_sum == 3.0
