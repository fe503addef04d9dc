"""The worker's hand-assembled update records decode exactly like the reference codec's."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lte_core import update_avro
from lte_core.basis import BasisArtifact
from lte_core.encoders import MeanEncoder
from lte_core.engine import EventColumns, WindowEngine
from lte_core.memory_store import MemoryWindowStore
from lte_core.update import LTEUpdate, decode_update, encode_update
from lte_core.update_avro import is_avro
from lte_core.window import WindowSpec
from streams.clock import Clock, SimulatedTime
from streams.updates import UPDATE_FORMATS, UpdateBuilder
from tests.integration.store_backends import same_update

SPEC = WindowSpec(window=10 * 60, lag=60, bucket=60)
NOW = 1_000_000.0


@settings(max_examples=60)
@given(
    st.integers(1, 6),
    st.sampled_from([None, 2]),
    st.lists(
        st.tuples(
            st.integers(0, 3),
            st.integers(0, 9),
            st.floats(-700, 200),
            st.sampled_from([1.0, 0.5, 3.0]),
        ),
        min_size=1,
        max_size=25,
    ),
    st.text(min_size=1, max_size=8),
    st.sampled_from(UPDATE_FORMATS),
)
def test_records_decode_like_the_reference_codec(
    d: int, k: int | None, raw: list[tuple[int, int, float, float]], suffix: str, fmt: str
) -> None:
    rng = np.random.default_rng(d)
    vectors = rng.standard_normal((10, d)).astype(np.float32)
    basis = BasisArtifact.build([f"i{i}" for i in range(10)], vectors, k=min(k, d) if k else None)
    users = [f'u"{u}\\{suffix}'.encode() for u in range(4)]  # ids that need JSON escaping
    by_user = [[r for r in raw if r[0] == u] for u in range(4)]
    seg = np.zeros(5, dtype=np.int64)
    seg[1:] = np.cumsum([len(b) for b in by_user])
    flat = [r for b in by_user for r in b]
    cols = EventColumns(
        seg=seg,
        items=np.array([r[1] for r in flat], dtype=np.uint32),
        ts=np.array([NOW + r[2] for r in flat]),
        weights=np.array([r[3] for r in flat], dtype=np.float32),
        offsets=np.arange(len(flat), dtype=np.int64),
    )
    store = MemoryWindowStore()
    engine = WindowEngine(SPEC, basis.item_vectors)
    result = engine.process(store, users, cols, NOW)
    encoder = MeanEncoder(basis)
    batch = UpdateBuilder(SPEC, encoder, basis.basis_version, Clock.create(None), fmt).build(
        users, result, NOW
    )
    changed = np.flatnonzero(result.changed)
    assert [key for key, _ in batch.records] == [users[i] for i in changed]
    for (key, value), i, due in zip(batch.records, changed, batch.due_at, strict=True):
        assert is_avro(value) == (fmt == "avro")
        got = _decode(value)
        n = int(result.summary.counts[i])
        encoded = encoder.encode(result.summary.rows(np.array([i]))) if n else None
        reference = LTEUpdate(
            user_id=key.decode(),
            basis_version=basis.basis_version,
            encoder="mean",
            as_of=NOW,
            window_start=float((result.end[i] - SPEC.n_buckets) * SPEC.bucket),
            window_end=float(result.end[i] * SPEC.bucket),
            n_events=n,
            weight_sum=float(result.summary.weight_sums[i]),
            coefficients=None if encoded is None else encoded.coefficients[0].astype(np.float32),
            vector=None if encoded is None else encoded.vectors[0].astype(np.float32),
            due_at=float(due),
            produced_at=got.produced_at,
            # offsets are 0.. in user order, so a user's last one ends its segment
            version=(int(seg[i + 1]) - 1, SPEC.end_bucket(NOW)),
        )
        want = decode_update(encode_update(reference))
        if fmt == "json":
            assert orjson.loads(value).keys() == orjson.loads(encode_update(reference)).keys()
        else:
            assert value == update_avro.encode(reference)
        assert same_update(got, want), (got, want)
        assert got.version == want.version


def _decode(value: bytes) -> LTEUpdate:
    got = update_avro.decode_mixed([value])[0]
    assert isinstance(got, LTEUpdate), got
    return got


def test_a_window_edge_is_due_when_the_simulated_clock_reached_it() -> None:
    """Under a simulated clock an edge's ``due_at`` is the wall instant the clock showed the
    edge time, so staleness (write - due) is real time; the edge time here is computed by
    hand from DESIGN 3.2: an event in bucket b enters at ``(b + 1)·G + L``."""
    basis = BasisArtifact.build(["a"], np.ones((1, 2), dtype=np.float32))
    sim = SimulatedTime(start=NOW, speed=1000.0, anchor=5_000.0)
    builder = UpdateBuilder(SPEC, MeanEncoder(basis), basis.basis_version, Clock(None, sim))
    engine = WindowEngine(SPEC, basis.item_vectors)
    store = MemoryWindowStore()
    ts = NOW + 5.0
    cols = EventColumns(
        seg=np.array([0, 1]),
        items=np.array([0], dtype=np.uint32),
        ts=np.array([ts]),
        weights=np.ones(1, dtype=np.float32),
        offsets=np.zeros(1, dtype=np.int64),
    )
    store.commit([b"u"], engine.process(store, [b"u"], cols, NOW + 10.0))  # behind the lag
    enters = (ts // SPEC.bucket + 1) * SPEC.bucket + SPEC.lag
    later = enters + 30.0
    result = engine.process(store, [b"u"], EventColumns.empty(1), later)
    batch = builder.build([b"u"], result, later)
    assert _decode(batch.records[0][1]).n_events == 1
    assert batch.due_at.tolist() == pytest.approx([5_000.0 + (enters - NOW) / 1000.0])
