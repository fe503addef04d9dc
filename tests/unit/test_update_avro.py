"""The binary update codec against fastavro, an independent implementation of Avro."""

from __future__ import annotations

import contextlib
import io
import json
import math

import fastavro
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lte_core import update_avro
from lte_core.errors import UpdateFormatError
from lte_core.update import MAX_VERSION, LTEUpdate
from lte_core.update import decode_update as decode_json
from lte_core.update import encode_update as encode_json

SCHEMA = fastavro.parse_schema(json.loads(update_avro.SCHEMA_TEXT))

ids = st.text(min_size=1, max_size=40).filter(lambda s: 1 <= len(s) <= 256)
finite = st.floats(allow_nan=False, allow_infinity=False)
f32 = st.floats(allow_nan=False, allow_infinity=False, width=32)
versions = st.integers(-MAX_VERSION, MAX_VERSION)


@st.composite
def updates(draw: st.DrawFn) -> LTEUpdate:
    n_events = draw(st.integers(0, 2**40))
    d = draw(st.integers(1, 12))
    identity = draw(st.booleans())
    vector = coefficients = None
    if n_events:
        vector = np.array(draw(st.lists(f32, min_size=d, max_size=d)), dtype=np.float32)
        coefficients = (
            vector
            if identity
            else np.array(draw(st.lists(f32, min_size=1, max_size=d)), dtype=np.float32)
        )
    return LTEUpdate(
        user_id=draw(ids),
        basis_version=draw(ids),
        encoder=draw(ids),
        as_of=draw(finite),
        window_start=draw(finite),
        window_end=draw(finite),
        n_events=n_events,
        weight_sum=draw(finite),
        coefficients=coefficients,
        vector=vector,
        due_at=draw(finite),
        produced_at=draw(finite),
        version=draw(st.none() | st.tuples(versions, versions)),
    )


def _same(a: LTEUpdate, b: LTEUpdate) -> None:
    for name in LTEUpdate.__slots__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            assert x is not None and y is not None, name
            assert x.dtype == y.dtype == np.float32, name
            assert x.tobytes() == y.tobytes(), name
        else:
            assert x == y, name


def _fastavro_body(value: bytes) -> dict[str, object]:
    assert value[:10] == update_avro.PREFIX
    body = io.BytesIO(value[10:])
    record = fastavro.schemaless_reader(body, SCHEMA, None)
    assert body.read() == b"", "fastavro left bytes unread"
    assert isinstance(record, dict)
    return record


def test_fingerprint_is_fastavros() -> None:
    canonical = fastavro.schema.to_parsing_canonical_form(SCHEMA)
    assert canonical == update_avro.CANONICAL_FORM
    # fastavro, like Avro's Java SchemaNormalization, gives the fingerprint's bytes
    # little-endian: the 8 bytes single-object encoding puts after C3 01.
    expected = fastavro.schema.fingerprint(canonical, "CRC-64-AVRO")
    assert bytes.fromhex(expected) == update_avro.FINGERPRINT


@settings(max_examples=300)
@given(updates())
def test_fastavro_reads_what_we_write(update: LTEUpdate) -> None:
    record = _fastavro_body(update_avro.encode(update))
    assert record["user_id"] == update.user_id
    if update.version is None:
        assert record["version"] is None
    else:
        assert record["version"] == dict(
            zip(("last_offset", "end_bucket"), update.version, strict=True)
        )
    assert record["n_events"] == update.n_events
    for name in ("as_of", "window_start", "window_end", "weight_sum", "due_at", "produced_at"):
        assert record[name] == getattr(update, name)
    if update.vector is None:
        assert record["vector"] is None and record["coefficients"] is None
    else:
        assert record["vector"] == update.vector.astype("<f4").tobytes()
        assert update.coefficients is not None
        identity = update.coefficients.tobytes() == update.vector.tobytes()
        assert (record["coefficients"] is None) == identity
        if not identity:
            assert record["coefficients"] == update.coefficients.astype("<f4").tobytes()


@settings(max_examples=300)
@given(updates())
def test_we_read_what_fastavro_writes(update: LTEUpdate) -> None:
    record = _fastavro_body(update_avro.encode(update))
    out = io.BytesIO()
    fastavro.schemaless_writer(out, SCHEMA, record)
    decoded = update_avro.decode(update_avro.PREFIX + out.getvalue())
    _same(decoded, update)


@settings(max_examples=100)
@given(st.lists(updates(), min_size=1, max_size=8), finite, finite, ids, ids)
def test_batch_encoder_equals_reference(
    batch: list[LTEUpdate], as_of: float, produced_at: float, basis: str, encoder: str
) -> None:
    d = 5
    rng = np.random.default_rng(len(batch))
    fixed = []
    for u in batch:
        vector = rng.standard_normal(d).astype(np.float32) if u.n_events else None
        fixed.append(
            LTEUpdate(
                u.user_id, basis, encoder, as_of, u.window_start, u.window_end, u.n_events,
                u.weight_sum, vector, vector, u.due_at, produced_at, u.version,
            )
        )  # fmt: skip
    filled = [i for i, u in enumerate(fixed) if u.n_events]
    vectors = np.array([fixed[i].vector for i in filled], dtype=np.float32).reshape(-1, d)
    rows = update_avro.encode_rows(
        [u.user_id for u in fixed],
        basis_version=basis,
        encoder=encoder,
        version=[u.version for u in fixed],
        as_of=as_of,
        window_start=[u.window_start for u in fixed],
        window_end=[u.window_end for u in fixed],
        n_events=[u.n_events for u in fixed],
        weight_sum=[u.weight_sum for u in fixed],
        due_at=[u.due_at for u in fixed],
        produced_at=produced_at,
        vectors=vectors,
        coefficients=None,
        filled=filled,
    )
    assert rows == [update_avro.encode(u) for u in fixed]


def test_identity_coefficients_travel_once() -> None:
    vector = np.arange(64, dtype=np.float32)
    update = LTEUpdate("u", "b", "mean", 1.0, 0.0, 1.0, 3, 3.0, vector, vector, 1.0, 2.0, (7, 1))
    other = LTEUpdate("u", "b", "mean", 1.0, 0.0, 1.0, 3, 3.0, vector[:8], vector, 1.0, 2.0, (7, 1))
    # the union branch and the length take a byte each, where null took one
    assert len(update_avro.encode(other)) - len(update_avro.encode(update)) == 1 + 8 * 4
    decoded = update_avro.decode(update_avro.encode(update))
    assert decoded.coefficients is not None
    assert decoded.coefficients.tobytes() == vector.tobytes()


def _record(**overrides: object) -> bytes:
    record: dict[str, object] = {
        "user_id": "u",
        "basis_version": "b",
        "encoder": "mean",
        "version": {"last_offset": 5, "end_bucket": 9},
        "as_of": 1.0,
        "window_start": 0.0,
        "window_end": 1.0,
        "n_events": 1,
        "weight_sum": 1.0,
        "due_at": 1.0,
        "produced_at": 1.0,
        "vector": np.ones(4, "<f4").tobytes(),
        "coefficients": None,
    }
    record.update(overrides)
    out = io.BytesIO()
    fastavro.schemaless_writer(out, SCHEMA, record)
    return update_avro.PREFIX + out.getvalue()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"as_of": math.nan}, "as_of"),
        ({"due_at": math.inf}, "due_at"),
        ({"weight_sum": -math.inf}, "weight_sum"),
        ({"vector": np.array([1, np.nan], "<f4").tobytes()}, "vector"),
        ({"coefficients": np.array([np.inf], "<f4").tobytes()}, "coefficients"),
        ({"vector": b"\x00\x00\x80"}, "vector"),
        ({"vector": None}, "vector"),
        ({"n_events": 0}, "vector"),
        ({"n_events": -1}, "n_events"),
        ({"version": {"last_offset": 2**53, "end_bucket": 0}}, "version"),
        ({"user_id": ""}, "user_id"),
        ({"encoder": "x" * 257}, "encoder"),
    ],
)
def test_bad_fields_are_named(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(UpdateFormatError) as info:
        update_avro.decode(_record(**overrides))
    assert info.value.field == field


def test_empty_window_round_trips() -> None:
    decoded = update_avro.decode(_record(n_events=0, vector=None))
    assert decoded.is_empty and decoded.vector is None and decoded.coefficients is None


@given(st.data())
def test_truncation_and_garbage_are_errors_not_crashes(data: st.DataObject) -> None:
    value = _record()
    cut = data.draw(st.integers(0, len(value) - 1))
    with pytest.raises(UpdateFormatError):
        update_avro.decode(value[:cut])
    with pytest.raises(UpdateFormatError) as info:
        update_avro.decode(value + b"\x00")
    assert info.value.field == "value"
    noise = data.draw(st.binary(max_size=64))
    with contextlib.suppress(UpdateFormatError):
        update_avro.decode(update_avro.PREFIX + noise)


def test_foreign_schema_is_refused_by_name() -> None:
    value = _record()
    forged = value[:2] + bytes(8) + value[10:]
    with pytest.raises(UpdateFormatError, match="unknown schema fingerprint"):
        update_avro.decode(forged)
    assert not update_avro.is_avro(b'{"user_id": "u"}')
    assert update_avro.is_avro(value)


def test_decode_many_reports_bad_records_by_position() -> None:
    good, bad = _record(), _record(as_of=math.nan)
    batch = update_avro.decode_many([good, bad, good])
    assert batch.positions == [0, 2]
    assert list(batch.errors) == [1] and batch.errors[1].field == "as_of"
    assert [u.user_id for u in batch.updates] == ["u", "u"]


def test_mixed_batches_are_read_by_marker() -> None:
    vector = np.arange(3, dtype=np.float32)
    update = LTEUpdate("u", "b", "mean", 1.0, 0.0, 1.0, 3, 3.0, vector, vector, 1.0, 2.0, (4, 2))
    as_json = encode_json(update)
    out = update_avro.decode_mixed(
        [update_avro.encode(update), as_json, b"{", _record(as_of=math.nan)]
    )
    assert isinstance(out[0], LTEUpdate) and out[0].version == (4, 2)
    assert isinstance(out[1], LTEUpdate) and out[1].user_id == "u"
    assert isinstance(out[2], UpdateFormatError) and out[2].field == "value"
    assert isinstance(out[3], UpdateFormatError) and out[3].field == "as_of"
    only_json = update_avro.decode_mixed([as_json])[0]
    assert isinstance(only_json, LTEUpdate)
    _same(only_json, decode_json(as_json))


def _reference(value: bytes) -> LTEUpdate | UpdateFormatError:
    try:
        return update_avro.decode(value)
    except UpdateFormatError as exc:
        return exc


def _agree(got: LTEUpdate | UpdateFormatError, want: LTEUpdate | UpdateFormatError) -> None:
    if isinstance(want, UpdateFormatError):
        assert isinstance(got, UpdateFormatError) and str(got) == str(want)
    else:
        assert isinstance(got, LTEUpdate)
        _same(got, want)


@settings(max_examples=300)
@given(st.lists(updates(), min_size=1, max_size=6), st.data())
def test_batch_decoder_agrees_with_the_reference(
    batch: list[LTEUpdate], data: st.DataObject
) -> None:
    """Valid, byte-flipped, truncated and extended records: the fast batch path accepts
    exactly what decode() accepts, with the same fields, and reports decode()'s errors."""
    values = []
    for update in batch:
        value = bytearray(update_avro.encode(update))
        how = data.draw(st.sampled_from(["keep", "flip", "cut", "extend", "nan"]))
        if how == "flip":
            at = data.draw(st.integers(0, len(value) - 1))
            value[at] = data.draw(st.integers(0, 255))
        elif how == "cut":
            value = value[: data.draw(st.integers(0, len(value) - 1))]
        elif how == "extend":
            value += b"\x00"
        elif how == "nan" and update.vector is not None:
            value[-4:] = np.array([np.nan], np.float32).tobytes()
        values.append(bytes(value))
    got = update_avro.decode_batch(values)
    assert len(got) == len(values)
    for raw, decoded in zip(values, got, strict=True):
        _agree(decoded, _reference(raw))
    mixed = update_avro.decode_mixed([*values, encode_json(batch[0])])
    for raw, decoded in zip(values, mixed, strict=False):
        if update_avro.is_avro(raw):  # the rest is read as JSON
            _agree(decoded, _reference(raw))
    assert isinstance(mixed[-1], LTEUpdate) and mixed[-1].user_id == batch[0].user_id
    # the refresher's columnar decoder: the same rows and the same errors, by position
    columns = update_avro.decode_columns([*values, encode_json(batch[0])])
    rows = dict(zip(columns.source.tolist(), columns.columns.rows(), strict=True))
    assert set(rows) | set(columns.errors) == set(range(len(mixed)))
    assert not set(rows) & set(columns.errors)
    for i, want in enumerate(mixed):
        _agree(rows[i] if i in rows else columns.errors[i], want)


def test_batch_decoder_keeps_vectors_apart() -> None:
    """Rows of one stacked matrix: each update gets its own values, and an identity
    record's coefficients are its vector."""
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((50, 384)).astype(np.float32)
    batch = [
        LTEUpdate(
            f"u{i}",
            "b",
            "mean",
            1.0,
            0.0,
            1.0,
            3,
            3.0,
            v if i % 2 else v[:8].copy(),
            v,
            1.0,
            2.0,
            (i, 1),
        )
        for i, v in enumerate(vectors)
    ]
    for update, decoded in zip(
        batch, update_avro.decode_batch([update_avro.encode(u) for u in batch]), strict=True
    ):
        assert isinstance(decoded, LTEUpdate)
        _same(decoded, update)
