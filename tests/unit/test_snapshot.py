"""``offline.snapshot.point_in_time`` against a from-scratch oracle (tests/oracle.py).

The oracle decides window membership with exact rational arithmetic and recomputes every
pair's window from the whole log; it shares no code path with the engine, the log store or
the step planner. Hypothesis draws event and pair times on and around bucket edges (where an
off-by-one in ``b(T - L)`` shows), pairs before, inside and after the log, unknown users and
unknown items, duplicated and unsorted pairs, and tiny per-call limits so one user's clocks
span many engine calls.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lte_core.autoencoder import AutoencoderArtifact, AutoencoderWeights
from lte_core.basis import BasisArtifact
from lte_core.encoders import EncoderSpec
from lte_core.window import WindowSpec
from offline import snapshot as snapshot_module
from offline.datasets import InteractionLog
from offline.snapshot import (
    Snapshot,
    SnapshotError,
    _Ids,
    _IdTable,
    concatenated,
    overlapping,
    point_in_time,
    streamed,
)
from tests.oracle import Ev, Spec, bounds, bucket_of, in_window

N_ITEMS, D = 12, 5
RNG = np.random.default_rng(5)
VECTORS = RNG.standard_normal((N_ITEMS, D)).astype(np.float32)
IDS = [f"i{i}" for i in range(N_ITEMS)]
IDENTITY = BasisArtifact.build(IDS, VECTORS)
REDUCED = BasisArtifact.build(IDS, VECTORS, k=3)


@dataclass(frozen=True)
class Case:
    spec: WindowSpec
    log: InteractionLog
    pair_users: npt.NDArray[np.str_]
    pair_ts: npt.NDArray[np.float64]


@st.composite
def cases(draw: st.DrawFn) -> Case:
    g = draw(st.sampled_from([1, 5, 60]))
    spec = WindowSpec(
        window=g * draw(st.integers(1, 6)),
        lag=g * draw(st.integers(0, 3)) + draw(st.sampled_from([0, 0, g // 2])),
        bucket=g,
    )
    horizon = 30 * g

    def instant() -> st.SearchStrategy[float]:
        # a bucket edge, just before or after one, or anywhere
        edge = st.integers(-2, horizon).map(lambda k: float(k * g))
        near = st.tuples(st.integers(-2, horizon), st.sampled_from([-1e-6, 1e-6, 0.5])).map(
            lambda t: t[0] * g + t[1] * g
        )
        anywhere = st.floats(-2.0 * g, float(horizon * g)).map(lambda t: round(t, 6))
        return st.one_of(edge, near, anywhere)

    n = draw(st.integers(1, 40))
    users = draw(st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=n, max_size=n))
    items = draw(
        st.lists(
            st.one_of(st.integers(0, N_ITEMS - 1).map(lambda i: f"i{i}"), st.just("unknown")),
            min_size=n,
            max_size=n,
        )
    )
    items[draw(st.integers(0, n - 1))] = f"i{draw(st.integers(0, N_ITEMS - 1))}"
    ts = draw(st.lists(instant(), min_size=n, max_size=n))
    weights = draw(st.lists(st.sampled_from([0.5, 1.0, 2.0, 3.25]), min_size=n, max_size=n))
    m = draw(st.integers(1, 30))
    pair_users = draw(
        st.lists(st.sampled_from(["a", "b", "c", "d", "nobody"]), min_size=m, max_size=m)
    )
    pair_ts = draw(
        st.lists(
            st.one_of(instant(), instant().map(lambda t: t + spec.lag)),
            min_size=len(pair_users),
            max_size=len(pair_users),
        )
    )
    return Case(
        spec=spec,
        log=InteractionLog(
            user_ids=np.asarray(users, dtype=np.str_),
            item_ids=np.asarray(items, dtype=np.str_),
            ts=np.asarray(ts, dtype=np.float64),
            weights=np.asarray(weights, dtype=np.float64),
        ),
        pair_users=np.asarray(pair_users, dtype=np.str_),
        pair_ts=np.asarray(pair_ts, dtype=np.float64),
    )


def oracle_means(
    case: Case, half_life: float | None
) -> list[tuple[int, int, int, float, npt.NDArray[np.float64] | None]]:
    """Per pair: (window start, end bucket, n, weight total, weighted mean) from scratch."""
    spec = Spec(case.spec.window, case.spec.lag, case.spec.bucket)
    out = []
    for user, clock in zip(case.pair_users.tolist(), case.pair_ts.tolist(), strict=True):
        events = [
            Ev(item=int(i[1:]), ts=t, weight=w)
            for u, i, t, w in zip(
                case.log.user_ids.tolist(),
                case.log.item_ids.tolist(),
                case.log.ts.tolist(),
                case.log.weights.tolist(),
                strict=True,
            )
            if u == user and i != "unknown"
        ]
        start, end = bounds(spec, clock)
        inside = in_window(spec, clock, events)
        total = np.zeros(D)
        weight = 0.0
        decayed_total = np.zeros(D)
        decayed_weight = 0.0
        for e in inside:
            total += e.weight * VECTORS[e.item].astype(np.float64)
            weight += e.weight
            if half_life is not None:
                age = end - bucket_of(e.ts, spec.bucket)
                factor = e.weight * 2.0 ** (-age * spec.bucket / half_life)
                decayed_total += factor * VECTORS[e.item].astype(np.float64)
                decayed_weight += factor
        if not inside:
            mean = None
        elif half_life is None:
            mean = total / weight
        else:
            mean = decayed_total / decayed_weight
        out.append((start, end, len(inside), weight, mean))
    return out


def assert_matches(
    snap: Snapshot, case: Case, basis: BasisArtifact, half_life: float | None = None
) -> None:
    assert len(snap) == len(case.pair_users)
    assert snap.user_ids.tolist() == case.pair_users.tolist()
    assert snap.as_of.tolist() == case.pair_ts.tolist()
    g = case.spec.bucket
    b = basis.basis.astype(np.float64)
    for i, (start, end, n, weight, mean) in enumerate(oracle_means(case, half_life)):
        assert snap.window_start[i] == start * g and snap.window_end[i] == end * g
        assert snap.n_events[i] == n, (i, snap.n_events[i], n)
        if mean is None:
            assert np.isnan(snap.vectors[i]).all() and np.isnan(snap.coefficients[i]).all()
            assert snap.weight_sum[i] == 0.0
            continue
        assert snap.weight_sum[i] == pytest.approx(weight, rel=1e-12)
        np.testing.assert_allclose(snap.coefficients[i], b @ mean, atol=1e-5)
        np.testing.assert_allclose(snap.vectors[i], b.T @ (b @ mean), atol=1e-5)


@given(case=cases())
def test_mean_equals_the_oracle_on_the_identity_basis(case: Case) -> None:
    snap = point_in_time(
        case.log,
        case.pair_users,
        case.pair_ts,
        basis=IDENTITY,
        window=case.spec,
        encoder=EncoderSpec.parse("mean"),
    )
    assert snap.encoder == "mean" and snap.basis_version == IDENTITY.basis_version
    assert snap.unknown_items == int(np.count_nonzero(case.log.item_ids == "unknown"))
    assert_matches(snap, case, IDENTITY)


@given(case=cases(), half_life=st.sampled_from([1, 7, 90]))
def test_recency_equals_the_oracle_on_a_reduced_basis(case: Case, half_life: int) -> None:
    snap = point_in_time(
        case.log,
        case.pair_users,
        case.pair_ts,
        basis=REDUCED,
        window=case.spec,
        encoder=EncoderSpec("recency", half_life=half_life),
    )
    assert snap.coefficients.shape == (len(case.pair_users), 3)
    assert_matches(snap, case, REDUCED, half_life=float(half_life))


@settings(max_examples=60)  # a second path over the same cases; the oracle tests go wide
@given(case=cases())
def test_the_answer_does_not_depend_on_how_steps_are_cut_into_engine_calls(
    case: Case,
) -> None:
    args = {"basis": REDUCED, "window": case.spec, "encoder": EncoderSpec.parse("mean")}
    whole = point_in_time(case.log, case.pair_users, case.pair_ts, **args)  # type: ignore[arg-type]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(snapshot_module, "EVENTS_PER_CALL", 2)
        patch.setattr(snapshot_module, "USERS_PER_CALL", 1)
        cut = point_in_time(case.log, case.pair_users, case.pair_ts, **args)  # type: ignore[arg-type]
    np.testing.assert_array_equal(whole.n_events, cut.n_events)
    np.testing.assert_allclose(whole.vectors, cut.vectors, atol=1e-6)
    assert_matches(cut, case, REDUCED)


@settings(max_examples=40)
@given(case=cases(), workers=st.integers(2, 4))
def test_threads_running_calls_side_by_side_give_bit_identical_answers(
    case: Case, workers: int
) -> None:
    args = {"basis": REDUCED, "window": case.spec, "encoder": EncoderSpec.parse("recency:7s")}
    with pytest.MonkeyPatch.context() as patch:
        # one user per call: every rank is many calls, which the threads share
        patch.setattr(snapshot_module, "USERS_PER_CALL", 1)
        patch.setattr(snapshot_module, "WORKERS", 1)
        alone = point_in_time(case.log, case.pair_users, case.pair_ts, **args)  # type: ignore[arg-type]
        patch.setattr(snapshot_module, "WORKERS", workers)
        shared = point_in_time(case.log, case.pair_users, case.pair_ts, **args)  # type: ignore[arg-type]
    for field in ("n_events", "weight_sum", "coefficients", "vectors"):
        np.testing.assert_array_equal(getattr(alone, field), getattr(shared, field), field)


#: ids that cannot be packed into integers (long, non-ASCII), taking the string path
LONG_USERS = {
    "a": "user-\u00e4-000000000001",
    "b": "b",
    "c": "c-0000000000000000003",
    "d": "\u65e5\u672c",
    "nobody": "nobody-at-all",
}
LONG_REDUCED = BasisArtifact.build([f"item-\u00fc-{i:012d}" for i in range(N_ITEMS)], VECTORS, k=3)


@settings(max_examples=40)
@given(case=cases())
def test_ids_that_do_not_pack_into_integers_give_bit_identical_answers(case: Case) -> None:
    def renamed(ids: npt.NDArray[np.str_], table: dict[str, str]) -> npt.NDArray[np.str_]:
        return np.asarray([table.get(i, i) for i in ids.tolist()], dtype=np.str_)

    items = {f"i{i}": f"item-\u00fc-{i:012d}" for i in range(N_ITEMS)}
    long_log = InteractionLog(
        renamed(case.log.user_ids, LONG_USERS),
        renamed(case.log.item_ids, items),
        case.log.ts,
        case.log.weights,
    )
    mean = EncoderSpec.parse("mean")
    short = point_in_time(
        case.log, case.pair_users, case.pair_ts, basis=REDUCED, window=case.spec, encoder=mean
    )
    long = point_in_time(
        long_log,
        renamed(case.pair_users, LONG_USERS),
        case.pair_ts,
        basis=LONG_REDUCED,
        window=case.spec,
        encoder=mean,
    )
    for field in ("n_events", "weight_sum", "window_end", "coefficients", "vectors"):
        np.testing.assert_array_equal(getattr(short, field), getattr(long, field), err_msg=field)
    assert short.unknown_items == long.unknown_items


id_text = st.one_of(
    st.text(alphabet="ab01-_", max_size=8),  # packs into one integer
    st.text(max_size=12),  # any string: the string path
)


@given(
    strings=st.lists(id_text, max_size=30),
    others=st.lists(id_text, max_size=10),
)
def test_ids_factorise_and_look_up_any_strings(strings: list[str], others: list[str]) -> None:
    given_ids = np.asarray(strings, dtype=np.str_)
    truth = given_ids.tolist()  # as numpy holds them (trailing NULs dropped)
    ids, codes = _Ids.factorise(given_ids)
    assert ids.values[codes].tolist() == truth
    assert sorted(ids.values.tolist()) == sorted(set(truth))
    # first appearance order
    assert ids.values.tolist() == list(dict.fromkeys(truth))
    index = {s: i for i, s in enumerate(ids.values.tolist())}
    queries = np.asarray(strings + others, dtype=np.str_)
    assert ids.lookup(queries).tolist() == [index.get(q, -1) for q in queries.tolist()]


def test_an_autoencoder_reads_the_same_windows_as_the_stream() -> None:
    rng = np.random.default_rng(3)
    weights = AutoencoderWeights(
        hidden_weight=rng.normal(0, 0.5, (4, D + 1)).astype(np.float32),
        hidden_bias=rng.normal(0, 0.5, 4).astype(np.float32),
        out_weight=rng.normal(0, 0.5, (3, 4)).astype(np.float32),
        out_bias=rng.normal(0, 0.1, 3).astype(np.float32),
    )
    artifact = AutoencoderArtifact.create(weights, {"basis_version": REDUCED.basis_version})
    case = Case(
        spec=WindowSpec(window=10, lag=2, bucket=1),
        log=InteractionLog(
            user_ids=np.array(["a", "a", "a", "b"]),
            item_ids=np.array(["i1", "i2", "i3", "i4"]),
            ts=np.array([0.0, 3.0, 5.5, 1.0]),
            weights=np.array([1.0, 2.0, 1.0, 1.0]),
        ),
        pair_users=np.array(["a", "a", "b", "a"]),
        pair_ts=np.array([7.0, 5.0, 20.0, 9.0]),
    )
    from tempfile import TemporaryDirectory  # noqa: PLC0415

    with TemporaryDirectory() as tmp:
        directory = artifact.save(f"{tmp}/ae")
        snap = point_in_time(
            case.log,
            case.pair_users,
            case.pair_ts,
            basis=REDUCED,
            window=case.spec,
            encoder=EncoderSpec.parse(f"ae:{directory}"),
        )
    assert snap.encoder == artifact.name
    assert snap.n_events.tolist() == [2, 1, 0, 3]
    # h = relu(W1·[x, log1p(n)] + b1), c = B·x + W2·h + b2, v = Bᵀ·c (lte_core.autoencoder)
    b = REDUCED.basis.astype(np.float64)
    for i, (_, _, n, _, mean) in enumerate(oracle_means(case, None)):
        if mean is None:
            assert np.isnan(snap.vectors[i]).all()
            continue
        hidden = np.maximum(
            weights.hidden_weight @ np.r_[mean, np.log1p(n)] + weights.hidden_bias, 0.0
        )
        c = b @ mean + weights.out_weight @ hidden + weights.out_bias
        np.testing.assert_allclose(snap.coefficients[i], c, atol=1e-5)
        np.testing.assert_allclose(snap.vectors[i], b.T @ c, atol=1e-5)


def _log(users: list[str], items: list[str], ts: list[float]) -> InteractionLog:
    return InteractionLog(
        np.array(users, dtype=np.str_),
        np.array(items, dtype=np.str_),
        np.array(ts, dtype=np.float64),
        np.ones(len(ts)),
    )


def _mean(log: InteractionLog, users: list[str], ts: list[float], **kw: Any) -> Snapshot:
    window = kw.pop("window", WindowSpec(5, 0, 1))
    return point_in_time(
        log,
        np.array(users, dtype=np.str_),
        np.array(ts, dtype=np.float64),
        basis=IDENTITY,
        window=window,
        encoder=EncoderSpec.parse("mean"),
        **kw,
    )


def test_equal_timestamps_keep_file_order_and_all_count() -> None:
    snap = _mean(_log(["a"] * 3, ["i1", "i2", "i1"], [10.0] * 3), ["a"], [11.0])
    assert snap.n_events.tolist() == [3]
    np.testing.assert_allclose(snap.vectors[0], (2 * VECTORS[1] + VECTORS[2]) / 3, atol=1e-6)


def test_a_log_without_any_known_item_is_refused_naming_it() -> None:
    with pytest.raises(SnapshotError, match=r"events\.jsonl: none of its 1 events"):
        _mean(_log(["a"], ["x"], [1.0]), ["a"], [5.0], source="events.jsonl")
    with pytest.raises(SnapshotError, match="no events"):
        _mean(_log([], [], []), ["a"], [5.0])


def test_no_pairs_give_an_empty_snapshot() -> None:
    snap = _mean(_log(["a"], ["i1"], [1.0]), [], [])
    assert len(snap) == 0 and snap.vectors.shape == (0, D)


def test_overlap_is_window_end_after_the_sequence_start() -> None:
    snap = _mean(_log(["a"], ["i1"], [1.0]), ["a"] * 3, [10.0] * 3, window=WindowSpec(6, 3, 2))
    # end = b(10 - 3) = 3 -> window_end = 6 s
    assert snap.window_end.tolist() == [6.0, 6.0, 6.0]
    assert overlapping(snap.window_end, np.array([5.0, 6.0, 7.0])).tolist() == [True, False, False]


@settings(max_examples=60)
@given(
    case=cases(),
    blocks=st.integers(2, 5),
    chunk_events=st.integers(1, 4),
    chunk_rows=st.integers(1, 3),
)
def test_many_blocks_and_tiny_chunks_equal_one_block_and_the_oracle(
    case: Case, blocks: int, chunk_events: int, chunk_rows: int
) -> None:
    """Users dealt to several blocks, ids spanning log chunks, pairs of users of different
    blocks interleaved, rows read back a few at a time: the same rows, in input order."""
    args: dict[str, Any] = {
        "basis": REDUCED,
        "window": case.spec,
        "encoder": EncoderSpec.parse("recency:7s"),
    }
    one = point_in_time(case.log, case.pair_users, case.pair_ts, blocks=1, **args)
    many = point_in_time(
        case.log,
        case.pair_users,
        case.pair_ts,
        blocks=blocks,
        chunk_events=chunk_events,
        chunk_rows=chunk_rows,
        **args,
    )
    assert many.unknown_items == one.unknown_items
    for field in ("user_ids", "as_of", "window_start", "window_end", "n_events"):
        np.testing.assert_array_equal(getattr(one, field), getattr(many, field), field)
    np.testing.assert_allclose(one.weight_sum, many.weight_sum, rtol=1e-12)
    np.testing.assert_allclose(one.vectors, many.vectors, atol=1e-6)
    assert_matches(many, case, REDUCED, half_life=7.0)


def test_pairs_of_users_in_different_blocks_come_back_in_input_order() -> None:
    users = [f"u{k}" for k in range(7)]
    log = _log(
        [u for u in users for _ in range(2)],
        [f"i{(k + j) % N_ITEMS}" for k in range(7) for j in range(2)],
        [float(k + j) for k in range(7) for j in range(2)],
    )
    pair_users = [users[(3 * j) % 7] for j in range(21)] + ["nobody", "u1"]
    clocks = [float(5 + j % 4) for j in range(23)]
    window = WindowSpec(20, 0, 1)
    one = _mean(log, pair_users, clocks, window=window, blocks=1)
    many = _mean(log, pair_users, clocks, window=window, blocks=3, chunk_events=3, chunk_rows=4)
    assert many.user_ids.tolist() == pair_users
    np.testing.assert_array_equal(one.n_events, many.n_events)
    np.testing.assert_array_equal(one.vectors, many.vectors)
    for i, (user, clock) in enumerate(zip(pair_users, clocks, strict=True)):
        mine = [
            VECTORS[int(item[1:])]
            for u, item, t in zip(log.user_ids, log.item_ids, log.ts, strict=True)
            if u == user and t < clock
        ]
        assert many.n_events[i] == len(mine)
        if mine:
            np.testing.assert_allclose(many.vectors[i], np.mean(mine, axis=0), atol=1e-6)


@given(
    chunks=st.lists(st.lists(id_text, min_size=1, max_size=6), min_size=1, max_size=6),
)
def test_the_id_table_grown_chunk_by_chunk_numbers_ids_by_first_appearance(
    chunks: list[list[str]],
) -> None:
    table = _IdTable()
    codes = [table.codes(np.asarray(chunk, dtype=np.str_)).tolist() for chunk in chunks]
    truth = [np.asarray(chunk, dtype=np.str_).tolist() for chunk in chunks]
    first = list(dict.fromkeys(s for chunk in truth for s in chunk))
    assert codes == [[first.index(s) for s in chunk] for chunk in truth]
    assert len(table) == len(first)
    assert table.ids().values.tolist() == first


def test_spill_files_are_removed_after_the_run_and_on_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    log = _log(["a", "b", "c"], ["i1", "i2", "i3"], [1.0, 2.0, 3.0])
    args: dict[str, Any] = {
        "basis": IDENTITY,
        "window": WindowSpec(5, 0, 1),
        "encoder": EncoderSpec("mean"),
    }
    pairs = (np.array(["a", "b", "c"]), np.array([4.0, 4.0, 4.0]))
    seen: list[str] = []
    with streamed(log, *pairs, blocks=2, **args) as stream:
        seen = [p.name for p in tmp_path.iterdir()]
        assert len(concatenated(stream.chunks())) == 3
    assert seen and not list(tmp_path.iterdir())
    with (
        pytest.raises(RuntimeError, match="consumer failed"),
        streamed(log, *pairs, blocks=2, **args) as stream,
    ):
        next(stream.chunks())
        raise RuntimeError("consumer failed")
    assert not list(tmp_path.iterdir())
    with pytest.raises(SnapshotError, match="none of its"):
        point_in_time(
            _log(["a", "b"], ["x", "y"], [1.0, 2.0]), *pairs, blocks=2, chunk_events=1, **args
        )
    assert not list(tmp_path.iterdir())
