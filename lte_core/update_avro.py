"""The binary form of an ``lte-updates`` record: Avro, single-object encoded.

Why Avro: it is the Kafka ecosystem's record format (Schema Registry, Kafka Connect, ksqlDB,
Flink and Spark all read it), a consumer in any language decodes it with a stock library from
the schema file ``lte_core/schemas/lte_update.avsc``, and it carries floats as raw IEEE bytes:
``vector`` and ``coefficients`` are ``bytes`` fields holding little-endian float32, so a numpy
consumer decodes a vector with one ``np.frombuffer`` and nothing formats or parses float text.

Each value is self-identifying without a registry (Avro's *single-object encoding*)::

    C3 01 | CRC-64-AVRO fingerprint of the schema (8 bytes, little-endian) | Avro binary

A JSON update starts with ``{``, so a reader tells the two apart by the first byte
(:func:`is_avro`), and an unknown fingerprint (a future schema) is refused by name rather than
misread. With the identity basis (``K = d``) the coefficients *are* the vector: the record
then carries ``coefficients = null`` and readers take the vector, which halves the record.

This module is the reference codec (:func:`encode`, :func:`decode`) plus the batch paths the
worker and refresher use (:func:`encode_rows`, :func:`decode_many`); tests check all of them
against ``fastavro``, an independent implementation of the Avro specification.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import cast

import numpy as np
import numpy.typing as npt

from lte_core.errors import UpdateFormatError
from lte_core.update import MAX_VERSION, LTEUpdate, Version, decode_updates
from lte_core.update_columns import UpdateColumns

F32Array = npt.NDArray[np.float32]
F64Array = npt.NDArray[np.float64]
I64Array = npt.NDArray[np.int64]

SCHEMA_TEXT = resources.files("lte_core").joinpath("schemas/lte_update.avsc").read_text("utf-8")

#: The schema's Parsing Canonical Form (Avro specification); its fingerprint names the schema.
CANONICAL_FORM = (
    '{"name":"io.lte_stream.v1.LTEUpdate","type":"record","fields":['
    '{"name":"user_id","type":"string"},{"name":"basis_version","type":"string"},'
    '{"name":"encoder","type":"string"},{"name":"version","type":["null",'
    '{"name":"io.lte_stream.v1.Version","type":"record","fields":['
    '{"name":"last_offset","type":"long"},{"name":"end_bucket","type":"long"}]}]},'
    '{"name":"as_of","type":"double"},{"name":"window_start","type":"double"},'
    '{"name":"window_end","type":"double"},{"name":"n_events","type":"long"},'
    '{"name":"weight_sum","type":"double"},{"name":"due_at","type":"double"},'
    '{"name":"produced_at","type":"double"},{"name":"vector","type":["null","bytes"]},'
    '{"name":"coefficients","type":["null","bytes"]}]}'
)

_CRC64_EMPTY = 0xC15D213AA4D7A795


def _crc64_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_CRC64_EMPTY & -(fp & 1))
        table.append(fp)
    return table


def crc64_avro(data: bytes) -> int:
    """Avro's 64-bit Rabin fingerprint (the ``CRC-64-AVRO`` of the specification)."""
    table = _crc64_table()
    fp = _CRC64_EMPTY
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


FINGERPRINT = struct.pack("<Q", crc64_avro(CANONICAL_FORM.encode()))
MARKER = b"\xc3\x01"
PREFIX = MARKER + FINGERPRINT
_MAX_ID_CHARS = 256
_DOUBLES3 = struct.Struct("<3d")
_DOUBLE = struct.Struct("<d")
_F32 = np.dtype("<f4")


def is_avro(value: bytes) -> bool:
    """Whether a record value is in this binary form (else it is read as JSON)."""
    return value[:2] == MARKER


def _long(n: int) -> bytes:
    """Avro ``long``: zig-zag, then a base-128 varint."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _version(version: Version | None) -> bytes:
    if version is None:
        return b"\x00"
    return b"\x02" + _long(version[0]) + _long(version[1])


def _string(text: str) -> bytes:
    raw = text.encode()
    return _long(len(raw)) + raw


def _raw(values: F32Array | None) -> bytes | None:
    return None if values is None else np.ascontiguousarray(values, dtype=_F32).tobytes()


def _bytes_field(raw: bytes | None) -> bytes:
    """A ``["null", "bytes"]`` float32 field."""
    if raw is None:
        return b"\x00"
    return b"\x02" + _long(len(raw)) + raw


def encode(update: LTEUpdate) -> bytes:
    """One update as an Avro single-object record (the reference encoder)."""
    return encode_raw(
        update.user_id,
        update.basis_version,
        update.encoder,
        version=update.version,
        times=(update.as_of, update.window_start, update.window_end),
        n_events=update.n_events,
        sums=(update.weight_sum, update.due_at, update.produced_at),
        vector=_raw(update.vector),
        coefficients=_raw(update.coefficients),
    )


def encode_raw(
    user_id: str,
    basis_version: str,
    encoder: str,
    *,
    version: Version | None,
    times: tuple[float, float, float],
    n_events: int,
    sums: tuple[float, float, float],
    vector: bytes | None,
    coefficients: bytes | None,
) -> bytes:
    """The record of an update whose float32 fields are given as little-endian bytes (what
    a store entry holds), so a reader of stored bytes answers the binary form without
    building arrays. ``times`` is ``(as_of, window_start, window_end)``, ``sums``
    ``(weight_sum, due_at, produced_at)``; coefficients equal to the vector are left out."""
    same = vector is not None and coefficients is not None and coefficients == vector
    return b"".join(
        (
            PREFIX,
            _string(user_id),
            _string(basis_version),
            _string(encoder),
            _version(version),
            _DOUBLES3.pack(*times),
            _long(n_events),
            _DOUBLES3.pack(*sums),
            _bytes_field(vector),
            _bytes_field(None if same else coefficients),
        )
    )


def encode_rows(
    user_ids: Sequence[str],
    *,
    basis_version: str,
    encoder: str,
    version: Sequence[Version | None],
    as_of: float,
    window_start: Sequence[float],
    window_end: Sequence[float],
    n_events: Sequence[int],
    weight_sum: Sequence[float],
    due_at: Sequence[float],
    produced_at: float,
    vectors: F32Array | None,
    coefficients: F32Array | None,
    filled: Sequence[int],
) -> list[bytes]:
    """The records of one flush of one worker, built without a per-record dict.

    ``vectors``/``coefficients`` hold the rows of the users in ``filled`` (positions whose
    window is not empty), in that order; ``coefficients is None`` means they are the vectors
    (identity basis). Equal to :func:`encode` record by record (tested).
    """
    has = np.fromiter((v is not None for v in version), dtype=bool, count=len(version))
    pairs = np.array([v or (0, 0) for v in version], dtype=np.int64).reshape(-1, 2)
    return encode_columns(
        FlushColumns(
            user_ids=[u.encode() for u in user_ids],
            last_offset=pairs[:, 0],
            end_bucket=pairs[:, 1],
            has_version=has,
            as_of=as_of,
            window_start=np.asarray(window_start, dtype=np.float64),
            window_end=np.asarray(window_end, dtype=np.float64),
            n_events=np.asarray(n_events, dtype=np.int64),
            weight_sum=np.asarray(weight_sum, dtype=np.float64),
            due_at=np.asarray(due_at, dtype=np.float64),
            produced_at=produced_at,
        ),
        basis_version=basis_version,
        encoder=encoder,
        vectors=vectors,
        coefficients=coefficients,
        filled=filled,
    )


@dataclass(frozen=True, slots=True)
class FlushColumns:
    """The scalar fields of a flush's records, one numpy column each (what the worker
    holds), with the user ids as UTF-8 bytes. ``has_version`` (default: all) says which
    records carry a version; the others carry ``null``. The encoder's input: one basis and
    encoder for every row, vectors apart. (A decoded batch, with every field and the raw
    vectors, is :class:`~lte_core.update_columns.UpdateColumns`, the refresher's.)"""

    user_ids: Sequence[bytes]
    last_offset: I64Array
    end_bucket: I64Array
    as_of: float
    window_start: F64Array
    window_end: F64Array
    n_events: I64Array
    weight_sum: F64Array
    due_at: F64Array
    produced_at: float
    has_version: npt.NDArray[np.bool_] | None = None


def encode_columns(
    columns: FlushColumns,
    *,
    basis_version: str,
    encoder: str,
    vectors: F32Array | None,
    coefficients: F32Array | None,
    filled: Sequence[int],
) -> list[bytes]:
    """:func:`encode_rows` from numpy columns: everything but the vectors is laid out for
    all records by numpy (:func:`_heads`), so no field costs Python per record; a record
    without vectors (an emptied window: most of a sweep's) is whole there."""
    n = len(columns.user_ids)
    empty = np.ones(n, dtype=bool)
    empty[np.asarray(filled, dtype=np.int64)] = False
    out = _heads(columns, middle=_string(basis_version) + _string(encoder), empty=empty)
    if not len(filled):
        return out
    assert vectors is not None
    vectors = np.ascontiguousarray(vectors, dtype=_F32)
    keep = np.ones(len(filled), dtype=bool)
    if coefficients is not None:
        coefficients = np.ascontiguousarray(coefficients, dtype=_F32)
        if coefficients.shape == vectors.shape:
            # a row equal to its vector, bit for bit, travels once (as in encode)
            same = (coefficients.view(np.uint32) == vectors.view(np.uint32)).all(axis=1)
            keep = ~same
    vec_part = [b"\x00"] * len(filled)
    coef_part = [b"\x00"] * len(filled)
    for part, matrix, wanted in ((vec_part, vectors, None), (coef_part, coefficients, keep)):
        if matrix is None:
            continue
        raw = matrix.tobytes()
        width = matrix.shape[1] * 4
        lead = b"\x02" + _long(width)
        for j in range(len(filled)):
            if wanted is None or wanted[j]:
                part[j] = lead + raw[j * width : (j + 1) * width]
    for j, position in enumerate(filled):
        out[position] += vec_part[j] + coef_part[j]
    return out


#: the smallest value of each varint length from 2 bytes on (2^7, 2^14, ... 2^63)
_VARINT_BOUNDS = np.uint64(1) << np.arange(7, 64, 7, dtype=np.uint64)


def _varints(values: I64Array) -> tuple[npt.NDArray[np.uint8], I64Array]:
    """Avro ``long`` of each value (zig-zag, base-128 varint) as rows of a byte matrix as
    wide as the longest one, and each one's length: :func:`_long` for a column at once."""
    v = values.astype(np.int64)
    z = ((v << 1) ^ (v >> 63)).view(np.uint64)
    lengths = np.searchsorted(_VARINT_BOUNDS, z, side="right") + 1
    width = int(lengths.max()) if len(z) else 1
    shifts = np.arange(0, 7 * width, 7, dtype=np.uint64)
    groups = ((z[:, None] >> shifts) & np.uint64(0x7F)).astype(np.uint8)
    groups[np.arange(width) < (lengths - 1)[:, None]] |= 0x80
    return groups, lengths


#: the two ``null`` vector fields that end the record of an emptied window
_NO_VECTORS = b"\x00\x00"


def _heads(c: FlushColumns, *, middle: bytes, empty: npt.NDArray[np.bool_]) -> list[bytes]:
    """Each record up to ``produced_at`` (everything but the vectors), and the whole record
    of the ``empty`` rows (two ``null`` vector fields), with no per-field Python per record:
    rows whose fields have the same widths (the user id's length, each varint's) share one
    layout, so each field of such a group is one column slice of a byte matrix whose rows
    are the records (a handful of groups per flush)."""
    names = c.user_ids
    n = len(names)
    if n == 0:
        return []
    has = np.ones(n, dtype=bool) if c.has_version is None else c.has_version
    name_len = np.fromiter(map(len, names), dtype=np.int64, count=n)
    groups, lengths = _varints(np.concatenate([name_len, c.last_offset, c.end_bucket, c.n_events]))
    groups = groups.reshape(4, n, -1)
    lengths = lengths.reshape(4, n)
    lengths[1:3, ~has] = 0
    doubles = np.empty((n, 6), dtype="<f8")
    doubles[:, 0] = c.as_of
    doubles[:, 1] = c.window_start
    doubles[:, 2] = c.window_end
    doubles[:, 3] = c.weight_sum
    doubles[:, 4] = c.due_at
    doubles[:, 5] = c.produced_at
    raw_doubles = doubles.view(np.uint8)
    flat = np.frombuffer(b"".join(names), dtype=np.uint8)
    first = np.cumsum(name_len) - name_len
    # one number per layout: the id's length, the four varints' lengths (<= 10), the flags
    shape = name_len << 18
    for j in range(4):
        shape |= lengths[j] << (4 * j + 2)
    shape |= has.astype(np.int64) << 1 | empty.astype(np.int64)
    layouts, inverse = np.unique(shape, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    cuts = np.searchsorted(inverse[order], np.arange(len(layouts) + 1)).tolist()
    records: list[bytes] = []
    for g in range(len(layouts)):
        rows = order[cuts[g] : cuts[g + 1]]
        r0 = int(rows[0])
        widths = (int(name_len[r0]), *(int(w) for w in lengths[:, r0]))
        records += _layout(
            widths,
            middle=middle,
            varints=groups[:, rows],
            name=flat[first[rows, None] + np.arange(widths[0])],
            version=bool(has[r0]),
            doubles=raw_doubles[rows],
            closed=bool(empty[r0]),
        )
    # back to row order
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n)
    return list(map(records.__getitem__, position.tolist()))


def _layout(
    widths: tuple[int, ...],
    *,
    middle: bytes,
    varints: npt.NDArray[np.uint8],
    name: npt.NDArray[np.uint8],
    version: bool,
    doubles: npt.NDArray[np.uint8],
    closed: bool,
) -> list[bytes]:
    """The records of rows sharing one layout (see :func:`_heads`)."""
    name_len, w_name, w_offset, w_end, w_events = widths
    segments: list[tuple[npt.NDArray[np.uint8] | bytes, int]] = [
        (PREFIX, len(PREFIX)),
        (varints[0, :, :w_name], w_name),
        (name, name_len),
        (middle, len(middle)),
        (b"\x02" if version else b"\x00", 1),
        (varints[1, :, :w_offset], w_offset),
        (varints[2, :, :w_end], w_end),
        (doubles[:, :24], 24),
        (varints[3, :, :w_events], w_events),
        (doubles[:, 24:], 24),
    ]
    if closed:
        segments.append((_NO_VECTORS, len(_NO_VECTORS)))
    width = sum(w for _, w in segments)
    out = np.empty((len(doubles), width), dtype=np.uint8)
    at = 0
    for data, w in segments:
        out[:, at : at + w] = np.frombuffer(data, np.uint8) if isinstance(data, bytes) else data
        at += w
    # a void view turns each row into one bytes object, NUL bytes kept
    return cast(list[bytes], out.view(f"V{width}").ravel().tolist())


class _Reader:
    """A cursor over one record's Avro binary body; errors name the field being read."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos

    def long(self, field: str) -> int:
        data, pos = self.data, self.pos
        shift = z = 0
        while True:
            if pos >= len(data) or shift > 63:
                raise UpdateFormatError(field, "truncated or overlong Avro long")
            byte = data[pos]
            pos += 1
            z |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        self.pos = pos
        return (z >> 1) ^ -(z & 1)

    def version(self) -> Version | None:
        branch = self.long("version")
        if branch == 0:
            return None
        if branch != 1:
            raise UpdateFormatError("version", f"union branch {branch} is neither null nor Version")
        version = (self.long("version"), self.long("version"))
        if any(abs(x) > MAX_VERSION for x in version):
            raise UpdateFormatError(
                "version", "expected [offset, end bucket], two integers of magnitude <= 2^53 - 1"
            )
        return version

    def raw(self, field: str, size: int) -> bytes:
        end = self.pos + size
        if size < 0 or end > len(self.data):
            raise UpdateFormatError(field, "truncated record")
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def string(self, field: str) -> str:
        raw = self.raw(field, self.long(field))
        try:
            text = raw.decode()
        except UnicodeDecodeError as exc:
            raise UpdateFormatError(field, "not UTF-8") from exc
        if not 1 <= len(text) <= _MAX_ID_CHARS:
            raise UpdateFormatError(field, f"expected a string of 1-{_MAX_ID_CHARS} characters")
        return text

    def doubles(self, fields: tuple[str, ...]) -> tuple[float, ...]:
        values = struct.unpack_from(f"<{len(fields)}d", self.raw(fields[0], 8 * len(fields)))
        for name, value in zip(fields, values, strict=True):
            if not math.isfinite(value):
                raise UpdateFormatError(name, "must be finite")
        return values

    def floats(self, field: str) -> F32Array | None:
        branch = self.long(field)
        if branch == 0:
            return None
        if branch != 1:
            raise UpdateFormatError(field, f"union branch {branch} is neither null nor bytes")
        size = self.long(field)
        if size <= 0 or size % 4:
            raise UpdateFormatError(field, "expected a positive multiple of 4 bytes (float32)")
        values = np.frombuffer(self.raw(field, size), dtype=_F32)
        if not np.isfinite(values).all():
            raise UpdateFormatError(field, "expected finite numbers")
        return values


def decode(value: bytes) -> LTEUpdate:
    """Parse and validate one binary record; :class:`UpdateFormatError` names the bad field."""
    if value[:2] != MARKER:
        raise UpdateFormatError("value", "not an Avro single-object record (no C3 01 marker)")
    if value[2:10] != FINGERPRINT:
        raise UpdateFormatError(
            "value",
            f"unknown schema fingerprint {value[2:10].hex()} (this reader knows "
            f"{FINGERPRINT.hex()}): upgrade the reader or the worker's --update-format",
        )
    r = _Reader(value, len(PREFIX))
    user_id = r.string("user_id")
    basis_version = r.string("basis_version")
    encoder = r.string("encoder")
    version = r.version()
    as_of, window_start, window_end = r.doubles(("as_of", "window_start", "window_end"))
    n_events = r.long("n_events")
    if n_events < 0:
        raise UpdateFormatError("n_events", "expected a non-negative integer")
    weight_sum, due_at, produced_at = r.doubles(("weight_sum", "due_at", "produced_at"))
    vector = r.floats("vector")
    coefficients = r.floats("coefficients")
    if r.pos != len(value):
        raise UpdateFormatError("value", f"{len(value) - r.pos} bytes after the record")
    if n_events == 0:
        if vector is not None or coefficients is not None:
            raise UpdateFormatError("vector", "must be null when n_events = 0")
    elif vector is None:
        raise UpdateFormatError("vector", "is null but n_events > 0")
    elif coefficients is None:
        coefficients = vector
    return LTEUpdate(
        user_id=user_id,
        basis_version=basis_version,
        encoder=encoder,
        as_of=as_of,
        window_start=window_start,
        window_end=window_end,
        n_events=n_events,
        weight_sum=weight_sum,
        coefficients=coefficients,
        vector=vector,
        due_at=due_at,
        produced_at=produced_at,
        version=version,
    )


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """A batch decoded by :func:`decode_many`: the good records, and each bad one's error."""

    updates: list[LTEUpdate]
    positions: list[int]
    errors: dict[int, UpdateFormatError]


def decode_many(values: Sequence[bytes]) -> DecodedBatch:
    """:func:`decode` for a batch; a bad record is reported by position, never raised."""
    updates: list[LTEUpdate] = []
    positions: list[int] = []
    errors: dict[int, UpdateFormatError] = {}
    for i, decoded in enumerate(decode_batch(values)):
        if isinstance(decoded, UpdateFormatError):
            errors[i] = decoded
        else:
            updates.append(decoded)
            positions.append(i)
    return DecodedBatch(updates, positions, errors)


def _decode_or_error(value: bytes) -> LTEUpdate | UpdateFormatError:
    try:
        return decode(value)
    except UpdateFormatError as exc:
        return exc


class _DoubtError(Exception):
    """The fast scan is not sure about a record: the reference decoder decides."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = z = 0
    while True:
        byte = data[pos]
        pos += 1
        z |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (z >> 1) ^ -(z & 1), pos
        shift += 7
        if shift > 63:
            raise _DoubtError


def _floats_at(data: bytes, pos: int) -> tuple[tuple[int, int] | None, int]:
    """``(offset, size)`` of a ``["null", "bytes"]`` float32 field, or None for null."""
    branch = data[pos]
    if branch == 0:
        return None, pos + 1
    if branch != 2:
        raise _DoubtError
    size, pos = _varint(data, pos + 1)
    if size <= 0 or size % 4 or pos + size > len(data):
        raise _DoubtError
    return (pos, size), pos + size


_Scanned = tuple[
    str, str, str, "Version | None", float, float, float, int, float, float, float,
    "tuple[int, int] | None", "tuple[int, int] | None",
]  # fmt: skip


def _scan(value: bytes, names: dict[bytes, str]) -> _Scanned:
    """The fields of a well-formed record, vectors as ``(offset, size)`` (finiteness is
    checked for the whole batch at once); raises :class:`_DoubtError` (or an ``IndexError``,
    ``UnicodeDecodeError``, ``struct.error``) for anything :func:`decode` must judge."""
    if value[:10] != PREFIX:
        raise _DoubtError
    pos = 10
    texts: list[str] = []
    for _ in range(3):
        size = value[pos]
        # one-byte zig-zag lengths (1-63 bytes, so 1-63 characters); longer is rare
        if size >= 0x80 or size == 0 or size & 1:
            raise _DoubtError
        size >>= 1
        raw = value[pos + 1 : pos + 1 + size]
        if len(raw) != size:
            raise _DoubtError
        text = names.get(raw)
        if text is None:
            text = names[raw] = raw.decode()
        texts.append(text)
        pos += 1 + size
    branch = value[pos]
    if branch == 0:
        version = None
        pos += 1
    elif branch == 2:
        offset, pos = _varint(value, pos + 1)
        bucket, pos = _varint(value, pos)
        if abs(offset) > MAX_VERSION or abs(bucket) > MAX_VERSION:
            raise _DoubtError
        version = (offset, bucket)
    else:
        raise _DoubtError
    as_of, window_start, window_end = _DOUBLES3.unpack_from(value, pos)
    n_events, pos = _varint(value, pos + 24)
    weight_sum, due_at, produced_at = _DOUBLES3.unpack_from(value, pos)
    # a sum of finite doubles that overflows only sends the record to decode()
    if n_events < 0 or not math.isfinite(
        as_of + window_start + window_end + weight_sum + due_at + produced_at
    ):
        raise _DoubtError
    vector, pos = _floats_at(value, pos + 24)
    coefficients, pos = _floats_at(value, pos)
    if pos != len(value) or (n_events == 0) != (vector is None):
        raise _DoubtError
    if vector is None and coefficients is not None:
        raise _DoubtError
    return (
        texts[0], texts[1], texts[2], version, as_of, window_start, window_end, n_events,
        weight_sum, due_at, produced_at, vector, coefficients,
    )  # fmt: skip


def decode_batch(values: Sequence[bytes]) -> list[LTEUpdate | UpdateFormatError]:
    """:func:`decode` for a batch, several times faster; a bad record is its error.

    Well-formed records take a fast path: one scan per record with precompiled structs and
    no per-field calls, and the float32 fields of the whole batch are checked for finiteness
    and copied by one numpy call per field length. Any record the scan is not sure of is
    decoded by :func:`decode`, the single authority on the rules and on the error reported
    (tests check the two agree on valid, corrupted and truncated records).
    """
    out: list[LTEUpdate | UpdateFormatError | None] = [None] * len(values)
    scanned: list[tuple[int, _Scanned]] = []
    names: dict[bytes, str] = {}
    for i, value in enumerate(values):
        try:
            scanned.append((i, _scan(value, names)))
        except (_DoubtError, IndexError, UnicodeDecodeError, struct.error):
            out[i] = _decode_or_error(value)
    # (row, field) of every float32 field, grouped by byte size: one stack + isfinite each
    groups: dict[int, list[tuple[int, int, int, int]]] = {}
    for row, (i, fields) in enumerate(scanned):
        for which, where in ((11, fields[11]), (12, fields[12])):
            if where is not None:
                groups.setdefault(where[1], []).append((row, which, i, where[0]))
    arrays: dict[tuple[int, int], F32Array] = {}
    bad: set[int] = set()
    for size, members in groups.items():
        raw = b"".join(values[i][at : at + size] for _, _, i, at in members)
        matrix = np.frombuffer(raw, _F32).reshape(len(members), size // 4).copy()
        finite = np.asarray(np.isfinite(matrix).all(axis=1))
        for j, (row, which, _, _) in enumerate(members):
            if finite[j]:
                arrays[row, which] = matrix[j]
            else:
                bad.add(row)
    for row, (i, f) in enumerate(scanned):
        if row in bad:
            out[i] = _decode_or_error(values[i])
            continue
        vector = arrays.get((row, 11))
        out[i] = LTEUpdate(
            user_id=f[0],
            basis_version=f[1],
            encoder=f[2],
            as_of=f[4],
            window_start=f[5],
            window_end=f[6],
            n_events=f[7],
            weight_sum=f[8],
            coefficients=arrays.get((row, 12), vector),
            vector=vector,
            due_at=f[9],
            produced_at=f[10],
            version=f[3],
        )
    return [x for x in out if x is not None]


@dataclass(frozen=True, slots=True)
class DecodedColumns:
    """A batch decoded by :func:`decode_columns`: the good records as columns, ``source[i]``
    the position of row ``i``'s record in the batch, and each bad record's error by position."""

    columns: UpdateColumns
    source: I64Array
    errors: dict[int, UpdateFormatError]


def decode_columns(values: Sequence[bytes]) -> DecodedColumns:
    """:func:`decode_mixed` straight into columns, with no update object per record.

    The Avro records of the batch are scanned together (:class:`_BatchScan`: each field of
    every record by a few numpy calls over the concatenated bytes, not a Python loop per
    record) and keep their float32 fields as the bytes the record carried (checked finite a
    whole field length at a time). JSON records, and any Avro record the scan is not sure
    of, go through the reference decoders, which stay the authority on the rules and the
    error reported. Rows keep the order of the records.
    """
    errors: dict[int, UpdateFormatError] = {}
    fallback: dict[int, LTEUpdate] = {}
    scan = _BatchScan(values)
    json_positions = np.flatnonzero(~scan.avro).tolist()
    for i in np.flatnonzero(scan.avro & scan.doubt).tolist():
        _settle(i, _decode_or_error(values[i]), fallback, errors)
    if json_positions:
        for i, got in zip(
            json_positions, decode_updates([values[i] for i in json_positions]), strict=True
        ):
            _settle(i, got, fallback, errors)
    scanned = np.flatnonzero(scan.avro & ~scan.doubt)
    good = np.union1d(scanned, np.fromiter(fallback, dtype=np.int64, count=len(fallback)))
    return DecodedColumns(scan.columns(good, fallback), good, errors)


#: Bytes of zeros after a batch's records: every fixed-size read the scan makes at a
#: position inside a record (a varint of up to 9 bytes, three doubles) stays in the buffer.
_PAD = 64
_PREFIX_BYTES = np.frombuffer(PREFIX, dtype=np.uint8)
_TEXT_FIELDS = 3


class _BatchScan:
    """The Avro records of a batch scanned field by field, all records at once.

    Every step reads one field of every record at its current position (a gather from the
    concatenated bytes) and advances the positions; a record whose field breaks a rule of
    :func:`_scan` is marked ``doubt`` and left to :func:`decode`, so this accepts exactly
    the records the per-record scan accepts (tests hold all three to the same answers).
    Positions are kept inside their record, so a corrupt length never reads past it."""

    def __init__(self, values: Sequence[bytes]) -> None:
        n = len(values)
        lengths = np.fromiter(map(len, values), dtype=np.int64, count=n)
        self.ends = np.cumsum(lengths)
        starts = self.starts = self.ends - lengths
        self.joined = b"".join(values)
        buf = np.frombuffer(self.joined + bytes(_PAD), dtype=np.uint8)
        self.buf = buf
        self.avro = (lengths >= len(MARKER)) & (buf[starts] == MARKER[0])
        self.avro &= buf[np.minimum(starts + 1, len(buf) - 1)] == MARKER[1]
        self.doubt = lengths < len(PREFIX) + 1
        head = buf[np.minimum(starts[:, None] + np.arange(len(PREFIX)), len(buf) - 1)]
        self.doubt |= (head != _PREFIX_BYTES).any(axis=1)
        pos = starts + len(PREFIX)
        self.texts: list[tuple[I64Array, I64Array]] = []
        for _ in range(_TEXT_FIELDS):
            # one-byte zig-zag lengths (1-63 bytes), as the per-record scan
            size = buf[pos].astype(np.int64)
            self.doubt |= (size >= 0x80) | (size == 0) | ((size & 1) == 1)
            size >>= 1
            self.texts.append((pos + 1, size))
            pos = self._advance(pos + 1 + size)
        branch = buf[pos]
        self.versioned = branch == 2
        self.doubt |= (branch != 0) & ~self.versioned
        offset, after = self._varint(pos + 1, self.versioned)
        bucket, after = self._varint(after, self.versioned)
        self.doubt |= self.versioned & (
            (np.abs(offset) > MAX_VERSION) | (np.abs(bucket) > MAX_VERSION)
        )
        self.version = np.stack([offset, bucket], axis=1).astype(np.float64)
        pos = self._advance(np.where(self.versioned, after, pos + 1))
        times = self._doubles(pos)
        self.n_events, pos = self._varint(pos + 24)
        sums = self._doubles(pos)
        self.doubles = np.concatenate([times, sums], axis=1)
        with np.errstate(over="ignore", invalid="ignore"):
            self.doubt |= (self.n_events < 0) | ~np.isfinite(self.doubles.sum(axis=1))
        self.vector, pos = self._floats(pos + 24)
        self.coefficients, pos = self._floats(pos)
        no_vector = self.vector[0] < 0
        self.doubt |= (pos != self.ends) | ((self.n_events == 0) != no_vector)
        self.doubt |= no_vector & (self.coefficients[0] >= 0)
        self.doubt |= ~self.avro
        self.text_values = self._decode_texts()
        self.vector_bytes = self._checked_floats(self.vector)
        self.coefficient_bytes = self._checked_floats(self.coefficients)

    def _advance(self, pos: I64Array) -> I64Array:
        self.doubt |= (pos > self.ends) | (pos < self.starts)
        return np.clip(pos, self.starts, self.ends)

    def _varint(
        self, pos: I64Array, where: npt.NDArray[np.bool_] | None = None
    ) -> tuple[I64Array, I64Array]:
        """Zig-zag longs of up to 9 bytes (63 bits); longer ones are left to decode().
        Only records ``where`` the field is present are judged by it."""
        z = np.zeros(len(pos), dtype=np.uint64)
        size = np.zeros(len(pos), dtype=np.int64)
        going = np.ones(len(pos), dtype=np.bool_)
        for k in range(9):
            byte = self.buf[pos + k].astype(np.uint64)
            z |= np.where(going, (byte & np.uint64(0x7F)) << np.uint64(7 * k), np.uint64(0))
            size += going
            going &= (byte & np.uint64(0x80)) != 0
        value = (z >> np.uint64(1)).astype(np.int64) ^ -(z & np.uint64(1)).astype(np.int64)
        end = pos + size
        if where is None:
            self.doubt |= going
            return value, self._advance(end)
        self.doubt |= where & (going | (end > self.ends))
        return value, np.minimum(end, self.ends)

    def _doubles(self, pos: I64Array) -> F64Array:
        raw = self.buf[pos[:, None] + np.arange(24)]
        self._advance(pos + 24)
        return np.ascontiguousarray(raw).view("<f8")

    def _floats(self, pos: I64Array) -> tuple[tuple[I64Array, I64Array], I64Array]:
        """A ``["null", "bytes"]`` float32 field: ``(offset, size)``, offset -1 for null."""
        branch = self.buf[pos]
        present = branch == 2
        self.doubt |= (branch != 0) & ~present
        size, after = self._varint(pos + 1, present)
        self.doubt |= present & ((size <= 0) | (size % 4 != 0) | (after + size > self.ends))
        size = np.where(present, size, 0)
        at = np.where(present, after, -1)
        return (at, size), self._advance(np.where(present, after + size, pos + 1))

    def _decode_texts(self) -> list[list[str]]:
        """The three strings of every record the scan accepts ("" for the others), each
        distinct one decoded once; one that is not UTF-8 puts its records in doubt."""
        joined = self.joined
        rows = np.flatnonzero(~self.doubt)
        listed = rows.tolist()
        out: list[list[str]] = []
        for at, size in self.texts:
            begin = at[rows]
            raws = [
                joined[a:b]
                for a, b in zip(begin.tolist(), (begin + size[rows]).tolist(), strict=True)
            ]
            table: dict[bytes, str] = {}
            broken: set[bytes] = set()
            for raw in set(raws):
                try:
                    table[raw] = raw.decode()
                except UnicodeDecodeError:
                    broken.add(raw)
            column = [""] * len(self.ends)
            for i, raw in zip(listed, raws, strict=True):
                if raw in broken:
                    self.doubt[i] = True
                else:
                    column[i] = table[raw]
            out.append(column)
        return out

    def _checked_floats(self, field: tuple[I64Array, I64Array]) -> list[bytes | None]:
        """Each accepted record's float32 bytes (None: null); a record holding a NaN or an
        infinity goes in doubt (checked one numpy call per field length)."""
        joined = self.joined
        at, size = field
        out: list[bytes | None] = [None] * len(at)
        present = np.flatnonzero(~self.doubt & (at >= 0))
        for length in np.unique(size[present]).tolist():
            rows = present[size[present] == length]
            chunks = [joined[a : a + length] for a in at[rows].tolist()]
            matrix = np.frombuffer(b"".join(chunks), _F32).reshape(len(rows), length // 4)
            finite = np.isfinite(matrix).all(axis=1)
            self.doubt[rows[~finite]] = True
            for i, chunk in zip(rows.tolist(), chunks, strict=True):
                out[i] = chunk
        return out

    def columns(self, rows: I64Array, fallback: dict[int, LTEUpdate]) -> UpdateColumns:
        """The columns of records ``rows`` (scanned, or judged by the reference decoders:
        ``fallback``), in that order."""
        if len(rows) == 0:
            return UpdateColumns.of([])
        listed = rows.tolist()
        texts = [[column[i] for i in listed] for column in self.text_values]
        vectors = [self.vector_bytes[i] for i in listed]
        coefficients = [
            v if c is None else c
            for v, c in zip(vectors, (self.coefficient_bytes[i] for i in listed), strict=True)
        ]
        doubles = self.doubles[rows]
        n_events = self.n_events[rows]
        order = np.empty((len(rows), 3), dtype=np.float64)
        order[:, 0] = self.versioned[rows]
        order[:, 1:] = np.where(self.versioned[rows, None], self.version[rows], doubles[:, [0, 4]])
        for j, i in enumerate(listed):
            u = fallback.get(i)
            if u is None:
                continue
            texts[0][j], texts[1][j], texts[2][j] = u.user_id, u.basis_version, u.encoder
            doubles[j] = (
                u.as_of, u.window_start, u.window_end, u.weight_sum, u.due_at, u.produced_at,
            )  # fmt: skip
            n_events[j] = u.n_events
            order[j] = (0.0, u.as_of, u.due_at) if u.version is None else (1.0, *u.version)
            vectors[j] = None if u.vector is None else u.vector.astype(_F32).tobytes()
            coefficients[j] = (
                vectors[j] if u.coefficients is None else u.coefficients.astype(_F32).tobytes()
            )
        return UpdateColumns(
            user_id=texts[0],
            basis_version=texts[1],
            encoder=texts[2],
            order=order,
            as_of=doubles[:, 0].copy(),
            window_start=doubles[:, 1].copy(),
            window_end=doubles[:, 2].copy(),
            n_events=n_events,
            weight_sum=doubles[:, 3].copy(),
            due_at=doubles[:, 4].copy(),
            produced_at=doubles[:, 5].copy(),
            vector=vectors,
            coefficients=coefficients,
        )


def _settle(
    i: int,
    got: LTEUpdate | UpdateFormatError,
    fallback: dict[int, LTEUpdate],
    errors: dict[int, UpdateFormatError],
) -> None:
    if isinstance(got, UpdateFormatError):
        errors[i] = got
    else:
        fallback[i] = got


def decode_mixed(values: Sequence[bytes]) -> list[LTEUpdate | UpdateFormatError]:
    """Decode a batch in which each record may be binary or JSON, told apart by its first
    bytes (:func:`is_avro`), so a topic can change format while readers keep running."""
    json_positions = [i for i, v in enumerate(values) if not is_avro(v)]
    out: list[LTEUpdate | UpdateFormatError] = []
    if len(json_positions) == len(values):
        out.extend(decode_updates(list(values)))
        return out
    if not json_positions:
        return decode_batch(values)
    json_set = set(json_positions)
    from_json = iter(decode_updates([values[i] for i in json_positions]))
    from_avro = iter(decode_batch([v for i, v in enumerate(values) if i not in json_set]))
    return [next(from_json) if i in json_set else next(from_avro) for i in range(len(values))]


__all__ = [
    "CANONICAL_FORM",
    "FINGERPRINT",
    "PREFIX",
    "SCHEMA_TEXT",
    "DecodedBatch",
    "DecodedColumns",
    "FlushColumns",
    "crc64_avro",
    "decode",
    "decode_batch",
    "decode_columns",
    "decode_many",
    "decode_mixed",
    "encode",
    "encode_columns",
    "encode_raw",
    "encode_rows",
    "is_avro",
]
