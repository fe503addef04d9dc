from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lte_core.errors import UpdateFormatError
from lte_core.update import LTEUpdate, decode_update, encode_update

f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@given(
    arrays(np.float32, st.integers(1, 64), elements=f32),
    arrays(np.float32, st.integers(1, 64), elements=f32),
)
def test_vectors_round_trip_bit_exact(vector: np.ndarray, coefficients: np.ndarray) -> None:
    update = LTEUpdate("u", "abc", "mean", 10.5, 0.0, 9.0, 3, 3.5, coefficients, vector, 10.0, 11.0)
    back = decode_update(encode_update(update))
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
