"""The bytes of the online store, identical in Redis and RocksDB.

Key of an entry::

    lte:<basis_version>:<encoder>:<user_id>

with ``%`` and ``:`` percent-escaped in ``basis_version`` and ``encoder`` (encoder names such
as ``recency:30d`` contain colons; the user id, last, is kept verbatim). The escaping makes
the key injective: two different triples never share a key. The registry of written pairs
lives under ``lte-meta:pairs`` (outside the ``lte:`` prefix).

Value of an entry: a fixed little-endian header followed by float32 arrays::

    offset  size  field
         0     1  format version (2; 1 for an update without a version)
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
     73|89  4K+4d               coefficients (K x f32), then vector (d x f32)

Format 2 entries are ordered by version, format 1 entries (written from updates without
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
from collections.abc import Sequence

import numpy as np

from lte_core.update import LTEUpdate
from serving.errors import StoreDataError
from serving.online_store import StoredLTE, StoreKey

FORMAT_VERSION = 2
UNVERSIONED_FORMAT = 1
HEADER = struct.Struct("<BdddddddQII")
VERSIONED_HEADER = struct.Struct("<BdddddddQIIdd")
ORDER_KEY_OFFSET = 1
VERSION_OFFSET = HEADER.size
ENTRY_PREFIX = b"lte:"
PAIRS_KEY = b"lte-meta:pairs"
_F32 = np.dtype("<f4")
log = logging.getLogger(__name__)


def _escape(part: str) -> str:
    return part.replace("%", "%25").replace(":", "%3A")


def _unescape(part: str) -> str:
    return part.replace("%3A", ":").replace("%25", "%")


def entry_key(key: StoreKey) -> bytes:
    return ENTRY_PREFIX + pair_field(key.basis_version, key.encoder) + b":" + key.user_id.encode()


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
        header = HEADER.pack(UNVERSIONED_FORMAT, *fields)
    else:
        header = VERSIONED_HEADER.pack(FORMAT_VERSION, *fields, *map(float, update.version))
    return (
        header
        + coefficients.astype(_F32, copy=False).tobytes()
        + vector.astype(_F32, copy=False).tobytes()
    )


def _header_size(data: bytes) -> int:
    return VERSIONED_HEADER.size if data[:1] == bytes([FORMAT_VERSION]) else HEADER.size


def is_entry(data: bytes) -> bool:
    """Whether ``data`` starts like an entry of format 1 or 2 (the order key is readable)."""
    return (
        len(data) >= 1
        and data[0] in {FORMAT_VERSION, UNVERSIONED_FORMAT}
        and len(data) >= _header_size(data)
    )


def order_key_of(data: bytes) -> tuple[int, float, float]:
    """:meth:`LTEUpdate.order_key` of an encoded entry, without decoding the vectors."""
    if data[0] == FORMAT_VERSION:
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


def decode_entry(key: StoreKey, data: bytes) -> StoredLTE:
    if not is_entry(data):
        raise StoreDataError(
            f"{entry_key(key)!r}: not an LTE entry of format {UNVERSIONED_FORMAT} or "
            f"{FORMAT_VERSION} ({len(data)} bytes); was it written by another program?"
        )
    size = _header_size(data)
    version = None
    if size == VERSIONED_HEADER.size:
        offset, end = struct.unpack_from("<dd", data, VERSION_OFFSET)
        version = (int(offset), int(end))
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
    ) = HEADER.unpack_from(data)
    if len(data) != size + 4 * (k + d) or (n_events == 0) != (k == 0 and d == 0):
        raise StoreDataError(
            f"{entry_key(key)!r}: entry is truncated or inconsistent "
            f"({len(data)} bytes for n_events={n_events}, K={k}, d={d})"
        )
    coefficients = vector = None
    if n_events:
        coefficients = np.frombuffer(data, _F32, k, size).astype(np.float32)
        vector = np.frombuffer(data, _F32, d, size + 4 * k).astype(np.float32)
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


_EMPTY = np.zeros(0, dtype=np.float32)
