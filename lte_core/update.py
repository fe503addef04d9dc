"""The LTE update record of topic ``lte-updates`` (DESIGN 3.4) and its JSON codec.

Vectors travel as JSON numbers written from float32 (shortest round-trip form), so what a
reader parses back into float32 is bit-identical to what the worker computed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from lte_core.errors import UpdateFormatError

F32Array = npt.NDArray[np.float32]

_MAX_ID_CHARS = 256
#: version components stay below 2^53 so every reader (Redis Lua numbers are doubles)
#: compares them exactly
MAX_VERSION = 2**53 - 1
Version = tuple[int, int]


@dataclass(frozen=True, slots=True)
class LTEUpdate:
    user_id: str
    basis_version: str
    encoder: str
    as_of: float
    window_start: float
    window_end: float
    n_events: int
    weight_sum: float
    coefficients: F32Array | None
    vector: F32Array | None
    due_at: float
    produced_at: float
    #: ``(last applied input offset, window end bucket)`` of the user when this LTE was
    #: computed; grows with every change of the user's window (docs/contracts.md,
    #: "Per-user version"). ``None`` on records of producers older than the field.
    version: Version | None = None

    @property
    def is_empty(self) -> bool:
        """An emptied window: the user has no LTE at ``as_of``."""
        return self.n_events == 0

    def order_key(self) -> tuple[int, float, float]:
        """Newer updates win (DESIGN 3.5): by ``version``, whatever the clocks say.

        Records without a version (written before the field existed) keep their old order,
        ``(as_of, due_at)``, among themselves and rank below every versioned record: a
        versioned record comes from an upgraded worker, which runs after every old one.
        """
        if self.version is None:
            return (0, self.as_of, self.due_at)
        return (1, self.version[0], self.version[1])

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "basis_version": self.basis_version,
            "encoder": self.encoder,
            "as_of": self.as_of,
            "window_start": self.window_start,
            "window_end": self.window_end,
            "n_events": self.n_events,
            "weight_sum": self.weight_sum,
            "coefficients": self.coefficients,
            "vector": self.vector,
            "due_at": self.due_at,
            "produced_at": self.produced_at,
            **({} if self.version is None else {"version": list(self.version)}),
        }


def encode_update(update: LTEUpdate) -> bytes:
    return orjson.dumps(update.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY)


def _number(doc: dict[str, Any], name: str) -> float:
    value = doc.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UpdateFormatError(name, f"expected a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise UpdateFormatError(name, "must be finite")
    return float(value)


def _string(doc: dict[str, Any], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not 1 <= len(value) <= _MAX_ID_CHARS:
        raise UpdateFormatError(name, f"expected a string of 1-{_MAX_ID_CHARS} characters")
    return value


def _version(doc: dict[str, Any]) -> Version | None:
    value = doc.get("version")
    if value is None:
        return None
    if not _is_version(value):
        raise UpdateFormatError(
            "version", "expected [offset, end bucket], two integers of magnitude <= 2^53 - 1"
        )
    return (value[0], value[1])


def _is_version(value: object) -> bool:
    return (
        type(value) is list
        and len(value) == 2
        and all(type(x) is int and abs(x) <= MAX_VERSION for x in value)
    )


def _vector(doc: dict[str, Any], name: str, n_events: int) -> F32Array | None:
    value = doc.get(name)
    if value is None:
        if n_events > 0:
            raise UpdateFormatError(name, "is null but n_events > 0")
        return None
    if n_events == 0:
        raise UpdateFormatError(name, "must be null when n_events = 0")
    if not isinstance(value, list) or not value:
        raise UpdateFormatError(name, "expected a non-empty list of numbers")
    if not set(map(type, value)) <= _NUMBER_TYPES:
        raise UpdateFormatError(name, "expected a list of JSON numbers (no strings, booleans)")
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise UpdateFormatError(name, "expected a list of numbers") from exc
    if arr.ndim != 1 or not np.isfinite(arr).all():
        raise UpdateFormatError(name, "expected a flat list of finite numbers")
    return arr


def decode_update(data: bytes) -> LTEUpdate:
    """Parse and validate one record value; :class:`UpdateFormatError` names the bad field."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise UpdateFormatError("value", f"not JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise UpdateFormatError("value", "expected a JSON object")
    n_events = doc.get("n_events")
    if isinstance(n_events, bool) or not isinstance(n_events, int) or n_events < 0:
        raise UpdateFormatError("n_events", "expected a non-negative integer")
    return LTEUpdate(
        user_id=_string(doc, "user_id"),
        basis_version=_string(doc, "basis_version"),
        encoder=_string(doc, "encoder"),
        as_of=_number(doc, "as_of"),
        window_start=_number(doc, "window_start"),
        window_end=_number(doc, "window_end"),
        n_events=n_events,
        weight_sum=_number(doc, "weight_sum"),
        coefficients=_vector(doc, "coefficients", n_events),
        vector=_vector(doc, "vector", n_events),
        due_at=_number(doc, "due_at"),
        produced_at=_number(doc, "produced_at"),
        version=_version(doc),
    )


def decode_updates(values: list[bytes]) -> list[LTEUpdate | UpdateFormatError]:
    """:func:`decode_update` for a whole batch, several times faster.

    Well-formed records take a fast path: scalar fields are checked inline and all vectors
    of the batch are converted to float32 by one numpy call per length. Any record the fast
    path does not accept is decoded by :func:`decode_update`, which stays the single
    authority on the rules and the error it reports (tests check the two agree).
    """
    out: list[LTEUpdate | UpdateFormatError | None] = [None] * len(values)
    pending: list[tuple[int, dict[str, Any]]] = []
    loads = orjson.loads
    for i, value in enumerate(values):
        try:
            doc = loads(value)
        except orjson.JSONDecodeError:
            doc = None
        if type(doc) is dict and _plain(doc):
            pending.append((i, doc))
        else:
            out[i] = _decode_or_error(value)
    by_length: dict[int, list[tuple[int, dict[str, Any]]]] = {}
    for i, doc in pending:
        vector = doc["vector"]
        if vector is None:
            out[i] = _from_doc(doc, None, None)
        else:
            by_length.setdefault(len(vector), []).append((i, doc))
    for group in by_length.values():
        try:
            # Beyond float32's range a value casts to inf; the finite check below sends
            # such records to decode_update, which names the field.
            with np.errstate(over="ignore"):
                vectors = np.array([doc["vector"] for _, doc in group], dtype=np.float32)
                coefficients_list = [doc["coefficients"] for _, doc in group]
                k = len(coefficients_list[0])
                same_k = all(len(c) == k for c in coefficients_list)
                coefficients = np.array(coefficients_list, dtype=np.float32) if same_k else None
        except (TypeError, ValueError):
            vectors, coefficients = None, None
        if vectors is None or coefficients is None or vectors.ndim != 2 or coefficients.ndim != 2:
            for i, _ in group:
                out[i] = _decode_or_error(values[i])
            continue
        finite = np.asarray(
            np.isfinite(vectors).all(axis=1) & np.isfinite(coefficients).all(axis=1), dtype=bool
        ).tolist()
        for j, (i, doc) in enumerate(group):
            out[i] = (
                _from_doc(doc, coefficients[j], vectors[j])
                if finite[j]
                else _decode_or_error(values[i])
            )
    return [u for u in out if u is not None]


_NUMBER_TYPES = frozenset({float, int})
_SCALARS = ("as_of", "window_start", "window_end", "weight_sum", "due_at", "produced_at")
_IDS = ("user_id", "basis_version", "encoder")


def _plain(doc: dict[str, Any]) -> bool:
    """The fields a well-formed update has, with the right types (vectors checked later)."""
    for name in _IDS:
        value = doc.get(name)
        if type(value) is not str or not 1 <= len(value) <= _MAX_ID_CHARS:
            return False
    for name in _SCALARS:
        value = doc.get(name)
        if type(value) is not float and type(value) is not int:
            return False
    n = doc.get("n_events")
    if type(n) is not int or n < 0:
        return False
    version = doc.get("version")
    if version is not None and not _is_version(version):
        return False
    vector, coefficients = doc.get("vector"), doc.get("coefficients")
    if n == 0:
        return vector is None and coefficients is None
    return (
        type(vector) is list
        and type(coefficients) is list
        and bool(vector)
        and bool(coefficients)
        # numpy would turn "1.5" and true into numbers; the contract says JSON numbers
        and set(map(type, vector)) <= _NUMBER_TYPES
        and set(map(type, coefficients)) <= _NUMBER_TYPES
    )


def _from_doc(
    doc: dict[str, Any], coefficients: F32Array | None, vector: F32Array | None
) -> LTEUpdate:
    return LTEUpdate(
        user_id=doc["user_id"],
        basis_version=doc["basis_version"],
        encoder=doc["encoder"],
        as_of=float(doc["as_of"]),
        window_start=float(doc["window_start"]),
        window_end=float(doc["window_end"]),
        n_events=doc["n_events"],
        weight_sum=float(doc["weight_sum"]),
        coefficients=coefficients,
        vector=vector,
        due_at=float(doc["due_at"]),
        produced_at=float(doc["produced_at"]),
        version=None if doc.get("version") is None else (doc["version"][0], doc["version"][1]),
    )


def _decode_or_error(value: bytes) -> LTEUpdate | UpdateFormatError:
    try:
        return decode_update(value)
    except UpdateFormatError as exc:
        return exc
