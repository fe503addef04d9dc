"""The bytes of the online store, identical in Redis and RocksDB.

Key of an entry::

    lte:<basis_version>:<encoder>:<user_id>

with ``%`` and ``:`` percent-escaped in ``basis_version`` and ``encoder`` (encoder names such
as ``recency:30d`` contain colons; the user id, last, is kept verbatim). The escaping makes
the key injective: two different triples never share a key. The registry of written pairs
lives under ``lte-meta:pairs`` (outside the ``lte:`` prefix).

Value of an entry: a fixed little-endian header followed by float32 arrays::

    offset  size  field
         0     1  format version (2, or 3 when the coefficients are the vector; 1 for an
                  update without a version)
         1     8  as_of         f64   ┐ the order key of format 1, read in place by the
         9     8  due_at        f64   ┘ Redis script: keep them here in every version
        17     8  produced_at   f64
        25     8  stored_at     f64
        33     8  window_start  f64
        41     8  window_end    f64
        49     8  weight_sum    f64
        57     8  n_events      u64
        65     4  K             u32   coefficients
        69     4  d             u32   vector
        73     8  version[0]    f64   ┐ format 2 only: the update's per-user version
        81     8  version[1]    f64   ┘ (last offset, end bucket), the order key
     73|89  4K+4d               coefficients (K x f32), then vector (d x f32); format 3:
                                the vector alone (4d), which is also the coefficients (K = d)

Format 3 is format 2 for the identity basis (``coefficients`` equal to ``vector``, the
default): its floats are stored once, which halves what Redis receives, keeps, appends to its
AOF and returns to the refresher at d=384 (1,625 instead of 3,161 bytes). Format 2 and 3
entries are ordered by version, format 1 entries (written from updates without
one, e.g. before the upgrade) by ``(as_of, due_at)``, and every format 2 entry is newer
than every format 1 entry — :meth:`lte_core.update.LTEUpdate.order_key`, which
:func:`order_key_of` reproduces from the bytes. Version components are integers below
2^53, exact as float64, which is what the Redis script's Lua numbers are.

An emptied window is the header alone with ``n_events = K = d = 0``. Binary float32 keeps an
entry at 73 + 4(K+d) bytes (JSON floats would be ~3x larger and need parsing) and returns
exactly the float32 values the worker computed.
"""

from __future__ import annotations

import functools
import logging
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import numpy.typing as npt
import orjson

from lte_core.update import LTEUpdate, Version
from lte_core.update_avro import encode_raw
from lte_core.update_columns import UpdateColumns
from serving.errors import StoreDataError
from serving.online_store import OUTCOMES, BatchWrite, StoredLTE, StoreKey, WriteResult

FORMAT_VERSION = 2
UNVERSIONED_FORMAT = 1
SHARED_FORMAT = 3
VERSIONED_FORMATS = frozenset({FORMAT_VERSION, SHARED_FORMAT})
ENTRY_FORMATS = VERSIONED_FORMATS | {UNVERSIONED_FORMAT}
HEADER = struct.Struct("<BdddddddQII")
VERSIONED_HEADER = struct.Struct("<BdddddddQIIdd")
ORDER_KEY_OFFSET = 1
VERSION_OFFSET = HEADER.size
ENTRY_PREFIX = b"lte:"
PAIRS_KEY = b"lte-meta:pairs"
_F32 = np.dtype("<f4")
STORED_AT_OFFSET = 25
DIMS_OFFSET = 65
_STORED_AT = struct.Struct("<d")
_DIMS = struct.Struct("<II")
F64Array = npt.NDArray[np.float64]
log = logging.getLogger(__name__)


def _escape(part: str) -> str:
    return part.replace("%", "%25").replace(":", "%3A")


def _unescape(part: str) -> str:
    return part.replace("%3A", ":").replace("%25", "%")


def entry_key(key: StoreKey) -> bytes:
    return user_key(pair_field(key.basis_version, key.encoder), key.user_id)


@functools.lru_cache(maxsize=1024)
def pair_field(basis_version: str, encoder: str) -> bytes:
    """The registry's name for a pair: the middle of an entry key.

    Cached because every key of a batch escapes one of a handful of pairs; the bound only
    matters for reads naming pairs that were never written."""
    return f"{_escape(basis_version)}:{_escape(encoder)}".encode()


def parse_pair_field(field: bytes) -> tuple[str, str]:
    basis_version, sep, encoder = field.decode().partition(":")
    if not sep:
        raise StoreDataError(f"{PAIRS_KEY.decode()}: malformed pair {field!r}")
    return _unescape(basis_version), _unescape(encoder)


def encode_entry(update: LTEUpdate, stored_at: float) -> bytes:
    coefficients = update.coefficients if update.coefficients is not None else _EMPTY
    vector = update.vector if update.vector is not None else _EMPTY
    fields = (
        update.as_of,
        update.due_at,
        update.produced_at,
        stored_at,
        update.window_start,
        update.window_end,
        update.weight_sum,
        update.n_events,
        len(coefficients),
        len(vector),
    )
    if update.version is None:
        return (
            HEADER.pack(UNVERSIONED_FORMAT, *fields)
            + coefficients.astype(_F32, copy=False).tobytes()
            + vector.astype(_F32, copy=False).tobytes()
        )
    floats = vector.astype(_F32, copy=False).tobytes()
    shared = coefficients.astype(_F32, copy=False).tobytes()
    code = SHARED_FORMAT if floats and shared == floats else FORMAT_VERSION
    header = VERSIONED_HEADER.pack(code, *fields, *map(float, update.version))
    return header + floats if code == SHARED_FORMAT else header + shared + floats


_HEADER_FIELDS = [
    ("format", "u1"),
    ("as_of", "<f8"),
    ("due_at", "<f8"),
    ("produced_at", "<f8"),
    ("stored_at", "<f8"),
    ("window_start", "<f8"),
    ("window_end", "<f8"),
    ("weight_sum", "<f8"),
    ("n_events", "<u8"),
    ("k", "<u4"),
    ("d", "<u4"),
]
_HEADER_ROW = np.dtype(_HEADER_FIELDS)
_VERSIONED_ROW = np.dtype([*_HEADER_FIELDS, ("offset", "<f8"), ("end", "<f8")])
assert _HEADER_ROW.itemsize == HEADER.size and _VERSIONED_ROW.itemsize == VERSIONED_HEADER.size


def entry_keys(columns: UpdateColumns, *, layout: Callable[[bytes, str], bytes]) -> list[bytes]:
    """The entry key of every row; ``layout(pair_field, user_id)`` is the backend's key of
    a user under a pair (:func:`user_key` here, hash-tagged on Redis Cluster)."""
    return [
        layout(pair_field(b, e), u)
        for b, e, u in zip(columns.basis_version, columns.encoder, columns.user_id, strict=True)
    ]


def user_key(pair: bytes, user_id: str) -> bytes:
    """:func:`entry_key` from a pair's field."""
    return ENTRY_PREFIX + pair + b":" + user_id.encode()


def encode_entries(columns: UpdateColumns, stored_at: float) -> list[bytes]:
    """:func:`encode_entry` of every row, with the headers of the whole batch packed by one
    numpy assignment per field and the vectors taken as the bytes the update carried."""
    n = len(columns)
    if n == 0:
        return []
    versioned = columns.versioned
    shared = versioned & np.fromiter(
        (
            v is not None and (c is v or c == v)
            for c, v in zip(columns.coefficients, columns.vector, strict=True)
        ),
        dtype=np.bool_,
        count=n,
    )
    k = np.array([0 if c is None else len(c) // 4 for c in columns.coefficients], np.uint32)
    d = np.array([0 if v is None else len(v) // 4 for v in columns.vector], np.uint32)
    headers: list[bytes] = [b""] * n
    for wanted, dtype, code in (
        (shared, _VERSIONED_ROW, SHARED_FORMAT),
        (versioned & ~shared, _VERSIONED_ROW, FORMAT_VERSION),
        (~versioned, _HEADER_ROW, UNVERSIONED_FORMAT),
    ):
        rows = np.flatnonzero(wanted)
        if not len(rows):
            continue
        packed = np.zeros(len(rows), dtype)
        packed["format"] = code
        packed["as_of"] = columns.as_of[rows]
        packed["due_at"] = columns.due_at[rows]
        packed["produced_at"] = columns.produced_at[rows]
        packed["stored_at"] = stored_at
        packed["window_start"] = columns.window_start[rows]
        packed["window_end"] = columns.window_end[rows]
        packed["weight_sum"] = columns.weight_sum[rows]
        packed["n_events"] = columns.n_events[rows]
        packed["k"] = k[rows]
        packed["d"] = d[rows]
        if code != UNVERSIONED_FORMAT:
            packed["offset"] = columns.order[rows, 1]
            packed["end"] = columns.order[rows, 2]
        blob = packed.tobytes()
        size = dtype.itemsize
        for j, i in enumerate(rows.tolist()):
            headers[i] = blob[j * size : (j + 1) * size]
    return [
        h + v if once and v else h + (c or b"") + (v or b"")
        for h, c, v, once in zip(
            headers, columns.coefficients, columns.vector, shared.tolist(), strict=True
        )
    ]


@dataclass(frozen=True, slots=True)
class Replaced:
    """What the entries a batch replaced held, as the refresher's accounting needs it:
    ``stored_at`` (NaN where nothing was replaced) and the vector bytes (None where there
    was none: no entry, an emptied window, or a value that is not an entry)."""

    stored_at: F64Array
    vector: list[bytes | None]


def replaced_parts(previous: Sequence[bytes | None]) -> Replaced:
    """:class:`Replaced` of the raw values a write returned. Bytes that are not an entry
    were overwritten like a missing entry; that is logged (as by :func:`decode_replaced`).

    The values are read a group of equal length and format at a time (a batch's are
    nearly all alike): their headers by one numpy view of the group joined, not a struct
    unpack per value (~6 -> ~2 µs per value at d=384)."""
    stored_at = np.full(len(previous), np.nan)
    vectors: list[bytes | None] = [None] * len(previous)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, data in enumerate(previous):
        if data:
            groups.setdefault((len(data), data[0]), []).append(i)
    for (length, code), rows in groups.items():
        size = VERSIONED_HEADER.size if code in VERSIONED_FORMATS else HEADER.size
        if code not in ENTRY_FORMATS or length < size:
            for _ in rows:
                log.warning("overwrote a value that was not an LTE entry (%d bytes)", length)
            continue
        block = np.frombuffer(b"".join([cast(bytes, previous[i]) for i in rows]), np.uint8).reshape(
            len(rows), length
        )
        when = np.ascontiguousarray(block[:, STORED_AT_OFFSET : STORED_AT_OFFSET + 8])
        dims = np.ascontiguousarray(block[:, DIMS_OFFSET : DIMS_OFFSET + 8]).view("<u4")
        d = dims[:, 1].astype(np.int64)
        start = size + (0 if code == SHARED_FORMAT else 4 * dims[:, 0].astype(np.int64))
        whole = start + 4 * d == length
        for _ in range(int((~whole).sum())):
            log.warning("overwrote an LTE entry that was truncated (%d bytes)", length)
        index = np.asarray(rows, dtype=np.int64)
        stored_at[index[whole]] = when.view("<f8")[whole, 0]
        for i, at in zip(
            index[whole & (d > 0)].tolist(),
            np.broadcast_to(start, d.shape)[whole & (d > 0)].tolist(),
            strict=True,
        ):
            vectors[i] = cast(bytes, previous[i])[at:]
    return Replaced(stored_at, vectors)


def as_results(columns: UpdateColumns, written: BatchWrite) -> list[WriteResult]:
    """A batch's outcomes as one :class:`WriteResult` per row, the replaced entries decoded
    (tests and tools; the refresher reads :class:`BatchWrite` directly)."""
    return [
        WriteResult(
            OUTCOMES[code],
            None
            if old is None
            else decode_replaced(StoreKey(columns.basis_version[i], columns.encoder[i], u), old),
        )
        for i, (u, code, old) in enumerate(
            zip(columns.user_id, written.outcomes.tolist(), written.previous, strict=True)
        )
    ]


def _vector_offset(data: bytes, size: int, k: int) -> int:
    """Where the vector of a checked entry starts (format 3: where its coefficients do)."""
    return size if data[0] == SHARED_FORMAT else size + 4 * k


def _header_size(data: bytes) -> int:
    return VERSIONED_HEADER.size if data[0] in VERSIONED_FORMATS else HEADER.size


def is_entry(data: bytes) -> bool:
    """Whether ``data`` starts like an entry of format 1, 2 or 3 (the order key is
    readable)."""
    return len(data) >= 1 and data[0] in ENTRY_FORMATS and len(data) >= _header_size(data)


def order_key_of(data: bytes) -> tuple[int, float, float]:
    """:meth:`LTEUpdate.order_key` of an encoded entry, without decoding the vectors."""
    if data[0] in VERSIONED_FORMATS:
        offset, end = struct.unpack_from("<dd", data, VERSION_OFFSET)
        return (1, int(offset), int(end))
    as_of, due_at = struct.unpack_from("<dd", data, ORDER_KEY_OFFSET)
    return (0, as_of, due_at)


def decode_replaced(key: StoreKey, data: bytes) -> StoredLTE | None:
    """The entry a write replaced. Bytes that are not an entry were overwritten like a
    missing entry (the ``lte:`` prefix is this project's); that is logged, not raised, so
    one foreign value cannot stop the refresher."""
    try:
        return decode_entry(key, data)
    except StoreDataError as exc:
        log.warning("overwrote a value that was not an LTE entry: %s", exc)
        return None


def decode_found(keys: Sequence[StoreKey], found: Sequence[bytes | None]) -> list[StoredLTE | None]:
    """The answer of ``get_many`` from the values a backend's multi-get returned for ``keys``
    (``None`` where it had none); a value that is not an entry raises."""
    return [
        None if data is None else decode_entry(key, data)
        for key, data in zip(keys, found, strict=True)
    ]


_Header = tuple[int, float, float, float, float, float, float, float, int, int, int]


def _checked(key: StoreKey, data: bytes) -> tuple[int, _Header, Version | None]:
    """The header size, the header fields and the version of an entry; raises
    :class:`StoreDataError` for bytes that are not a whole, consistent entry."""
    if not is_entry(data):
        raise StoreDataError(
            f"{entry_key(key)!r}: not an LTE entry of format {UNVERSIONED_FORMAT}, "
            f"{FORMAT_VERSION} or {SHARED_FORMAT} ({len(data)} bytes); was it written by "
            "another program?"
        )
    size = _header_size(data)
    version = None
    if size == VERSIONED_HEADER.size:
        offset, end = struct.unpack_from("<dd", data, VERSION_OFFSET)
        version = (int(offset), int(end))
    header: _Header = HEADER.unpack_from(data)
    n_events, k, d = header[8:]
    floats = d if data[0] == SHARED_FORMAT else k + d
    if (
        len(data) != size + 4 * floats
        or (n_events == 0) != (k == 0 and d == 0)
        or (data[0] == SHARED_FORMAT and (k != d or not d))
    ):
        raise StoreDataError(
            f"{entry_key(key)!r}: entry is truncated or inconsistent "
            f"({len(data)} bytes for n_events={n_events}, K={k}, d={d})"
        )
    return size, header, version


def decode_entry(key: StoreKey, data: bytes) -> StoredLTE:
    size, header, version = _checked(key, data)
    (
        _,
        as_of,
        due_at,
        produced_at,
        stored_at,
        window_start,
        window_end,
        weight_sum,
        n_events,
        k,
        d,
    ) = header
    coefficients = vector = None
    if n_events:
        split = _vector_offset(data, size, k)
        coefficients = np.frombuffer(data, _F32, k, size).astype(np.float32)
        vector = np.frombuffer(data, _F32, d, split).astype(np.float32)
    update = LTEUpdate(
        user_id=key.user_id,
        basis_version=key.basis_version,
        encoder=key.encoder,
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
    return StoredLTE(update, stored_at)


def entry_json(key: StoreKey, data: bytes) -> bytes:
    """The read API's JSON of an entry, built from the stored bytes: byte for byte
    ``orjson.dumps(decode_entry(key, data).to_dict(), option=OPT_SERIALIZE_NUMPY)`` (tested),
    without an update object, and with the floats formatted once when the coefficients are
    the vector's bytes (identity basis), which halves a read's formatting."""
    size, header, version = _checked(key, data)
    _, as_of, due_at, produced_at, stored_at, start, end, weight_sum, n_events, k, _ = header
    vector: orjson.Fragment | None = None
    coefficients: orjson.Fragment | None = None
    if n_events:
        split = _vector_offset(data, size, k)
        vector = _floats_json(data, split, len(data))
        same = data[0] == SHARED_FORMAT or data[size:split] == data[split:]
        coefficients = vector if same else _floats_json(data, size, split)
    doc: dict[str, object] = {
        "user_id": key.user_id,
        "basis_version": key.basis_version,
        "encoder": key.encoder,
        "as_of": as_of,
        "window_start": start,
        "window_end": end,
        "n_events": n_events,
        "weight_sum": weight_sum,
        "coefficients": coefficients,
        "vector": vector,
        "due_at": due_at,
        "produced_at": produced_at,
    }
    if version is not None:
        doc["version"] = list(version)
    doc["stored_at"] = stored_at
    return orjson.dumps(doc)


def _floats_json(data: bytes, start: int, stop: int) -> orjson.Fragment:
    values = np.frombuffer(data, _F32, (stop - start) // 4, start)
    return orjson.Fragment(orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY))


def entry_record(key: StoreKey, data: bytes) -> tuple[bytes, float]:
    """The read API's binary answer for an entry: the Avro record of the stored update
    (byte for byte :func:`lte_core.update_avro.encode` of :func:`decode_entry`'s update,
    tested) and ``stored_at``, with the float32 bytes copied as stored."""
    size, header, version = _checked(key, data)
    _, as_of, due_at, produced_at, stored_at, start, end, weight_sum, n_events, k, _ = header
    vector = coefficients = None
    if n_events:
        split = _vector_offset(data, size, k)
        coefficients, vector = data[size : size + 4 * k], data[split:]
    record = encode_raw(
        key.user_id,
        key.basis_version,
        key.encoder,
        version=version,
        times=(as_of, start, end),
        n_events=n_events,
        sums=(weight_sum, due_at, produced_at),
        vector=vector,
        coefficients=coefficients,
    )
    return record, stored_at


_EMPTY = np.zeros(0, dtype=np.float32)
