"""The read API's binary bodies, shared by the server (:mod:`serving.read_api`) and the client.

A single LTE is the Avro single-object record of ``lte-updates`` (:mod:`lte_core.update_avro`,
schema ``lte_core/schemas/lte_update.avsc``), so a consumer that already reads the topic reads
the API with the same decoder and float32 vectors come out with one ``np.frombuffer``, nothing
formatted or parsed as text. What the record lacks travels in headers: ``LTE-Stored-At``
(``repr`` of a float, seconds) for a single LTE, and the pair a request resolved to,
``LTE-Basis-Version`` and ``LTE-Encoder`` (percent-encoded UTF-8), on both routes.

A ``batchGet`` body is one frame per requested id, in request order::

    u32 LE  L        length of the record; 0 = no entry for that id (nothing follows)
    f64 LE  stored_at                                  ┐ only when L > 0
    L bytes the Avro single-object record               ┘

Length-prefixed records are how Kafka and gRPC frame messages; the 0 length stands for
JSON's ``null`` (a record is never empty: it starts with the 10-byte single-object header).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from urllib.parse import quote, unquote

from lte_core.errors import UpdateFormatError

OCTET_STREAM = "application/octet-stream"
AVRO_UPDATE = "application/vnd.lte.update+avro"
BINARY_MEDIA_TYPES = (OCTET_STREAM, AVRO_UPDATE)
STORED_AT_HEADER = "LTE-Stored-At"
BASIS_HEADER = "LTE-Basis-Version"
ENCODER_HEADER = "LTE-Encoder"
_LENGTH = struct.Struct("<I")
_STORED_AT = struct.Struct("<d")
_MISSING = _LENGTH.pack(0)

Frame = tuple[bytes, float]


def frame_batch(entries: Sequence[Frame | None]) -> bytes:
    """The body of a binary ``batchGet`` answer: per id ``(record, stored_at)`` or None."""
    parts: list[bytes] = []
    for entry in entries:
        if entry is None:
            parts.append(_MISSING)
        else:
            record, stored_at = entry
            parts.append(_LENGTH.pack(len(record)) + _STORED_AT.pack(stored_at) + record)
    return b"".join(parts)


def unframe_batch(body: bytes) -> list[Frame | None]:
    """The frames of :func:`frame_batch`; a truncated body raises naming the frame."""
    out: list[Frame | None] = []
    pos = 0
    view = memoryview(body)
    while pos < len(body):
        if pos + 4 > len(body):
            raise UpdateFormatError("body", f"frame {len(out)}: truncated length")
        (size,) = _LENGTH.unpack_from(body, pos)
        pos += 4
        if size == 0:
            out.append(None)
            continue
        end = pos + 8 + size
        if end > len(body):
            raise UpdateFormatError("body", f"frame {len(out)}: truncated record")
        (stored_at,) = _STORED_AT.unpack_from(body, pos)
        out.append((bytes(view[pos + 8 : end]), stored_at))
        pos = end
    return out


def header_text(value: str) -> str:
    """A pair's name as a header value (ASCII, reversible)."""
    return quote(value, safe="")


def text_of_header(value: str) -> str:
    return unquote(value)


__all__ = [
    "AVRO_UPDATE",
    "BASIS_HEADER",
    "BINARY_MEDIA_TYPES",
    "ENCODER_HEADER",
    "OCTET_STREAM",
    "STORED_AT_HEADER",
    "Frame",
    "frame_batch",
    "header_text",
    "text_of_header",
    "unframe_batch",
]
