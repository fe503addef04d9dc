from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lte_core.errors import UpdateFormatError
from lte_core.update import LTEUpdate, decode_update, decode_updates, encode_update
from tests.integration.store_backends import same_update

f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@given(
    arrays(np.float32, st.integers(1, 64), elements=f32),
    arrays(np.float32, st.integers(1, 64), elements=f32),
)
def test_vectors_round_trip_bit_exact(vector: np.ndarray, coefficients: np.ndarray) -> None:
    update = LTEUpdate("u", "abc", "mean", 10.5, 0.0, 9.0, 3, 3.5, coefficients, vector, 10.0, 11.0)
    data = encode_update(update)
    # The wire format itself, read by a plain JSON parser: floats that are the float32s.
    doc = orjson.loads(data)
    assert np.asarray(doc["vector"], dtype=np.float32).tobytes() == vector.tobytes()
    assert np.asarray(doc["coefficients"], dtype=np.float32).tobytes() == coefficients.tobytes()
    assert (doc["user_id"], doc["as_of"], doc["due_at"], doc["n_events"]) == ("u", 10.5, 10.0, 3)
    back = decode_update(data)
    assert back.vector is not None and back.coefficients is not None
    np.testing.assert_array_equal(back.vector, vector)
    np.testing.assert_array_equal(back.coefficients, coefficients)
    assert (back.user_id, back.as_of, back.due_at, back.n_events) == ("u", 10.5, 10.0, 3)


def test_empty_window_update_has_null_vectors() -> None:
    update = LTEUpdate("u", "abc", "mean", 10.0, 0.0, 9.0, 0, 0.0, None, None, 10.0, 11.0)
    doc = orjson.loads(encode_update(update))
    assert doc["vector"] is None and doc["coefficients"] is None
    assert decode_update(encode_update(update)).is_empty


def _doc(**changes: object) -> bytes:
    doc: dict[str, object] = {
        "user_id": "u",
        "basis_version": "v",
        "encoder": "mean",
        "as_of": 1.0,
        "window_start": 0.0,
        "window_end": 1.0,
        "n_events": 1,
        "weight_sum": 1.0,
        "coefficients": [1.0],
        "vector": [1.0],
        "due_at": 1.0,
        "produced_at": 1.0,
    }
    doc.update(changes)
    return orjson.dumps(doc)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b"nope", "value"),
        (b"[]", "value"),
        (_doc(user_id=None), "user_id"),
        (_doc(n_events=-1), "n_events"),
        (_doc(as_of="x"), "as_of"),
        (_doc(vector=None), "vector"),
        (_doc(n_events=0), "coefficients"),
        (_doc(vector=["a"]), "vector"),
        (_doc(vector=[[1.0]]), "vector"),
        (_doc(due_at=True), "due_at"),
    ],
)
def test_malformed_updates_name_the_field(data: bytes, field: str) -> None:
    with pytest.raises(UpdateFormatError) as info:
        decode_update(data)
    assert info.value.field == field


update_docs = st.fixed_dictionaries(
    {
        "user_id": st.one_of(st.text(min_size=1, max_size=5), st.just(""), st.integers(0, 9)),
        "basis_version": st.just("v1"),
        "encoder": st.sampled_from(["mean", "", 3]),
        "as_of": st.one_of(
            st.floats(allow_nan=False, allow_infinity=False),
            st.integers(0, 2**40),
            st.text(max_size=2),
            st.booleans(),
        ),
        "window_start": st.just(0.0),
        "window_end": st.just(10),
        "n_events": st.one_of(st.integers(-1, 3), st.just(True), st.floats(0, 2)),
        "weight_sum": st.just(1.5),
        "coefficients": st.one_of(
            st.none(),
            st.lists(f32, min_size=0, max_size=3),
            st.lists(st.text(max_size=1), min_size=1, max_size=2),
            st.lists(st.lists(f32, max_size=2), min_size=1, max_size=2),
        ),
        "vector": st.one_of(
            st.none(), st.lists(f32, min_size=0, max_size=3), st.just([1e39]), st.just([1.0, None])
        ),
        "due_at": st.just(5.0),
        "produced_at": st.just(6.0),
    }
)


# ``update_docs`` is almost never a valid update (about one value in a hundred); these
# always are, so the decoded-field comparison below runs in every example that draws one.
valid_docs = st.integers(0, 3).flatmap(
    lambda n: st.fixed_dictionaries(
        {
            "user_id": st.text(min_size=1, max_size=5),
            "basis_version": st.just("v1"),
            "encoder": st.sampled_from(["mean", "recency:30d"]),
            "as_of": st.floats(-1e12, 1e12),
            "window_start": st.floats(-1e12, 1e12),
            "window_end": st.integers(0, 2**40),
            "n_events": st.just(n),
            "weight_sum": st.floats(0, 1e6),
            "coefficients": st.none() if n == 0 else st.lists(f32, min_size=1, max_size=4),
            "vector": st.none() if n == 0 else st.lists(f32, min_size=1, max_size=4),
            "due_at": st.floats(-1e12, 1e12),
            "produced_at": st.floats(-1e12, 1e12),
        }
    )
)


@given(
    st.lists(
        st.one_of(
            update_docs.map(orjson.dumps), valid_docs.map(orjson.dumps), st.binary(max_size=20)
        ),
        max_size=12,
    )
)
def test_batch_decoder_agrees_with_decode_update(values: list[bytes]) -> None:
    got = decode_updates(values)
    assert len(got) == len(values)
    for value, result in zip(values, got, strict=True):
        try:
            want: LTEUpdate | UpdateFormatError = decode_update(value)
        except UpdateFormatError as exc:
            want = exc
        if isinstance(want, UpdateFormatError):
            assert isinstance(result, UpdateFormatError) and result.field == want.field
            continue
        assert isinstance(result, LTEUpdate) and same_update(result, want), (result, want)


_GOOD = {
    "user_id": "u",
    "basis_version": "b",
    "encoder": "mean",
    "as_of": 10.0,
    "window_start": 0.0,
    "window_end": 9.0,
    "n_events": 2,
    "weight_sum": 2.0,
    "coefficients": [0.5, 1.5],
    "vector": [0.5, 1.5],
    "due_at": 9.5,
    "produced_at": 10.5,
    "version": [41, 7],
}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"vector": [0.5, "1.5"]}, "vector"),
        ({"vector": [0.5, True]}, "vector"),
        ({"coefficients": [False, 1.5]}, "coefficients"),
        ({"version": [1]}, "version"),
        ({"version": [1, 2.0]}, "version"),
        ({"version": [1, True]}, "version"),
        ({"version": "1,2"}, "version"),
        ({"version": [2**53, 0]}, "version"),
    ],
)
def test_strings_booleans_and_bad_versions_are_refused_by_both_decoders(
    change: dict[str, object], field: str
) -> None:
    value = orjson.dumps({**_GOOD, **change})
    with pytest.raises(UpdateFormatError) as err:
        decode_update(value)
    assert err.value.field == field
    [batch] = decode_updates([value])
    assert isinstance(batch, UpdateFormatError) and batch.field == field


def test_the_version_round_trips_and_is_optional() -> None:
    update = decode_update(orjson.dumps(_GOOD))
    assert update.version == (41, 7)
    assert orjson.loads(encode_update(update))["version"] == [41, 7]
    old = decode_update(orjson.dumps({k: v for k, v in _GOOD.items() if k != "version"}))
    assert old.version is None and "version" not in orjson.loads(encode_update(old))
    [fast] = decode_updates([orjson.dumps(_GOOD)])
    assert isinstance(fast, LTEUpdate) and same_update(fast, update)
