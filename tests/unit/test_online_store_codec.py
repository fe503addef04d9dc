"""The store's bytes: entry codec and key layout (serving/store_format.py)."""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lte_core import update_avro
from lte_core.update import LTEUpdate
from serving.errors import StoreDataError
from serving.online_store import StoreKey
from serving.store_format import (
    HEADER,
    VERSIONED_HEADER,
    decode_entry,
    decode_replaced,
    encode_entry,
    entry_json,
    entry_key,
    entry_record,
    order_key_of,
    pair_field,
    parse_pair_field,
)

f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
f64 = st.floats(allow_nan=False, allow_infinity=False)
ids = st.text(min_size=1, max_size=20)
versions = st.integers(-(2**53) + 1, 2**53 - 1)


@st.composite
def updates(draw: st.DrawFn) -> LTEUpdate:
    n_events = draw(st.integers(0, 2**40))
    coefficients = vector = None
    if n_events:
        vector = draw(arrays(np.float32, st.integers(1, 48), elements=f32))
        # the identity basis (coefficients = vector, stored once: format 3) half the time
        coefficients = (
            vector.copy()
            if draw(st.booleans())
            else draw(arrays(np.float32, st.integers(1, 48), elements=f32))
        )
    return LTEUpdate(
        user_id=draw(ids),
        basis_version=draw(ids),
        encoder=draw(ids),
        as_of=draw(f64),
        window_start=draw(f64),
        window_end=draw(f64),
        n_events=n_events,
        weight_sum=draw(f64),
        coefficients=coefficients,
        vector=vector,
        due_at=draw(f64),
        produced_at=draw(f64),
        version=draw(st.none() | st.tuples(versions, versions)),
    )


def _same(a: LTEUpdate, b: LTEUpdate) -> None:
    for name in LTEUpdate.__dataclass_fields__:
        left, right = getattr(a, name), getattr(b, name)
        if isinstance(left, np.ndarray) or isinstance(right, np.ndarray):
            assert left is not None and right is not None, name
            assert left.dtype == right.dtype == np.float32
            assert left.tobytes() == right.tobytes(), name  # bit-exact, -0.0 included
        else:
            assert left == right, name


@given(updates(), f64)
def test_entries_round_trip_exactly(update: LTEUpdate, stored_at: float) -> None:
    data = encode_entry(update, stored_at)
    back = decode_entry(StoreKey.of(update), data)
    _same(back.update, update)
    assert back.stored_at == stored_at
    k = 0 if update.coefficients is None else len(update.coefficients)
    d = 0 if update.vector is None else len(update.vector)
    header = HEADER.size if update.version is None else VERSIONED_HEADER.size
    assert len(data) == (header + 4 * d if _stored_once(update) else header + 4 * (k + d))
    assert data[0] == (1 if update.version is None else 3 if _stored_once(update) else 2)


def _stored_once(update: LTEUpdate) -> bool:
    """Format 3: a versioned update whose coefficients are the vector's float32 bytes."""
    return (
        update.version is not None
        and update.vector is not None
        and update.coefficients is not None
        and update.coefficients.tobytes() == update.vector.tobytes()
    )


@given(updates())
def test_the_order_key_sits_where_the_redis_script_reads_it(update: LTEUpdate) -> None:
    data = encode_entry(update, 0.0)
    assert order_key_of(data) == update.order_key()
    assert HEADER.size == 73 and VERSIONED_HEADER.size == 89
    if update.version is None:
        assert data[0] == 1 and struct.unpack_from("<dd", data, 1) == (update.as_of, update.due_at)
    else:
        assert data[0] in (2, 3) and struct.unpack_from("<dd", data, 73) == update.version


def test_an_emptied_window_is_a_header_only_marker() -> None:
    update = LTEUpdate("u", "b", "mean", 5.0, 0.0, 1.0, 0, 0.0, None, None, 4.0, 6.0)
    data = encode_entry(update, 7.0)
    assert len(data) == HEADER.size
    back = decode_entry(StoreKey.of(update), data).update
    assert back.is_empty and back.vector is None and back.coefficients is None


def test_bytes_that_are_not_an_entry_are_refused_with_the_key() -> None:
    vec = np.ones(3, np.float32)
    update = LTEUpdate("u", "b", "mean", 5.0, 0.0, 1.0, 2, 2.0, vec, vec, 4.0, 6.0)
    key = StoreKey.of(update)
    good = encode_entry(update, 7.0)
    bad_version = b"\x03" + good[1:]
    inconsistent = HEADER.pack(1, 5.0, 4.0, 6.0, 7.0, 0.0, 1.0, 0.0, 0, 3, 3) + good[HEADER.size :]
    for data in (b"", b"hello", good[:-1], good + b"\0", bad_version, inconsistent):
        with pytest.raises(StoreDataError, match="lte:b:mean:u"):
            decode_entry(key, data)
        assert decode_replaced(key, data) is None


@given(st.tuples(ids, ids, ids), st.tuples(ids, ids, ids))
def test_keys_are_injective(a: tuple[str, str, str], b: tuple[str, str, str]) -> None:
    assert (entry_key(StoreKey(*a)) == entry_key(StoreKey(*b))) == (a == b)


def test_keys_are_readable_and_colons_cannot_collide() -> None:
    assert entry_key(StoreKey("abc123", "mean", "user:7")) == b"lte:abc123:mean:user:7"
    one = entry_key(StoreKey("v", "recency:30d", "u"))
    other = entry_key(StoreKey("v", "recency", "30d:u"))
    assert one == b"lte:v:recency%3A30d:u" and one != other


@given(ids, ids)
def test_pair_fields_round_trip(basis_version: str, encoder: str) -> None:
    assert parse_pair_field(pair_field(basis_version, encoder)) == (basis_version, encoder)


@st.composite
def read_entries(draw: st.DrawFn) -> tuple[StoreKey, bytes]:
    """A stored entry and its key; a third of them with the identity basis (coefficients
    are the vector), where the fast answers reuse the vector's bytes and text."""
    update = draw(updates())
    if update.vector is not None and draw(st.booleans()):
        update = dataclasses.replace(update, coefficients=update.vector.copy())
    return StoreKey.of(update), encode_entry(update, draw(f64))


@given(read_entries())
def test_entry_json_is_the_reference_json_of_the_decoded_entry(
    entry: tuple[StoreKey, bytes],
) -> None:
    key, data = entry
    reference = orjson.dumps(decode_entry(key, data).to_dict(), option=orjson.OPT_SERIALIZE_NUMPY)
    assert entry_json(key, data) == reference


@given(read_entries())
def test_entry_record_is_the_reference_record_of_the_decoded_entry(
    entry: tuple[StoreKey, bytes],
) -> None:
    key, data = entry
    stored = decode_entry(key, data)
    assert entry_record(key, data) == (update_avro.encode(stored.update), stored.stored_at)


@pytest.mark.parametrize("answer", [entry_json, entry_record])
def test_fast_answers_refuse_what_decode_entry_refuses(answer: Any) -> None:
    key = StoreKey("b", "mean", "u")
    vector = np.arange(4, dtype=np.float32)
    good = encode_entry(
        LTEUpdate("u", "b", "mean", 1.0, 0.0, 1.0, 3, 3.0, vector, vector, 1.0, 1.0), 2.0
    )
    for bad in (good[:-1], b"\x07" + good[1:], b"x", good + b"\x00"):
        with pytest.raises(StoreDataError) as expected:
            decode_entry(key, bad)
        with pytest.raises(StoreDataError) as got:
            answer(key, bad)
        assert str(got.value) == str(expected.value)
