"""Validation of interaction records (DESIGN 3.1), pure so it can be tested exhaustively.

A record is either an :class:`Interaction` or a :class:`Rejection` carrying a stable
machine-readable ``reason`` (used as a metric label and DLQ header) and a human ``detail``
naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

MAX_ID_CHARS: Final = 256
#: Weights are stored as float32; this range keeps 7 significant digits and keeps one
#: event from drowning the float64 running sum of the others.
MIN_WEIGHT: Final = 1e-6
MAX_WEIGHT: Final = 1e6
DEFAULT_MAX_RECORD_BYTES: Final = 4096


class Reason:
    """Reasons for dead-lettering; stable strings, used as metric labels."""

    NOT_JSON: Final = "not_json"
    NOT_OBJECT: Final = "not_object"
    MISSING_FIELD: Final = "missing_field"
    BAD_FIELD: Final = "bad_field"
    KEY_MISMATCH: Final = "key_mismatch"
    TOO_LARGE: Final = "too_large"
    FUTURE_TS: Final = "future_ts"
    UNKNOWN_ITEM: Final = "unknown_item"
    UNKNOWN_TYPE: Final = "unknown_type"

    ALL: Final = (
        NOT_JSON,
        NOT_OBJECT,
        MISSING_FIELD,
        BAD_FIELD,
        KEY_MISMATCH,
        TOO_LARGE,
        FUTURE_TS,
        UNKNOWN_ITEM,
        UNKNOWN_TYPE,
    )


@dataclass(frozen=True, slots=True)
class Interaction:
    user_id: str
    item_id: str
    ts: float
    weight: float
    type: str | None


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class EventRules:
    """Limits applied to every record; built once from the worker's settings."""

    max_future_skew: float = 3600.0
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    #: Multipliers per ``type``; with a non-empty mapping, unlisted types are rejected.
    type_weights: Mapping[str, float] | None = None


def _id_field(doc: dict[str, Any], name: str) -> str | Rejection:
    if name not in doc:
        return Rejection(Reason.MISSING_FIELD, f"{name}: required")
    value = doc[name]
    if not isinstance(value, str):
        return Rejection(Reason.BAD_FIELD, f"{name}: expected a string, got {type(value).__name__}")
    if not 1 <= len(value) <= MAX_ID_CHARS:
        return Rejection(Reason.BAD_FIELD, f"{name}: must be 1-{MAX_ID_CHARS} characters")
    return value


def _number_field(value: Any, name: str) -> float | Rejection:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return Rejection(Reason.BAD_FIELD, f"{name}: expected a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        return Rejection(Reason.BAD_FIELD, f"{name}: must be finite")
    return number


def plain_interaction(
    key: bytes | None, value: bytes | None, *, max_bytes: int, latest_ts: float
) -> tuple[str, str, float] | None:
    """The common record — exactly ``user_id``, ``item_id``, ``ts``, valid — decided with a
    handful of type checks and no allocations; ``None`` means "ask :func:`parse_interaction`",
    which is the single authority on every rule (tests check the two never disagree).
    ``latest_ts`` is the clock plus the allowed future skew."""
    if value is None or key is None or len(value) > max_bytes:
        return None
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not dict or len(doc) != 3:
        return None
    user = doc.get("user_id")
    item = doc.get("item_id")
    ts = doc.get("ts")
    if (
        type(user) is str
        and type(item) is str
        and (type(ts) is float or type(ts) is int)
        and 0 < len(user) <= MAX_ID_CHARS
        and 0 < len(item) <= MAX_ID_CHARS
        and ts <= latest_ts
        and key == user.encode()
    ):
        # orjson never yields NaN or infinity, so ts is finite here.
        return user, item, float(ts)
    return None


def parse_interaction(  # noqa: PLR0912 - one branch per contract rule
    key: bytes | None, value: bytes | None, now: float, rules: EventRules
) -> Interaction | Rejection:
    """Validate one Kafka record of topic ``interactions`` against the contract."""
    if value is None:
        return Rejection(Reason.NOT_JSON, "value: missing (tombstone)")
    if len(value) > rules.max_record_bytes:
        return Rejection(
            Reason.TOO_LARGE, f"value: {len(value)} bytes exceeds {rules.max_record_bytes}"
        )
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return Rejection(Reason.NOT_JSON, f"value: not JSON ({exc.msg})")
    if not isinstance(doc, dict):
        return Rejection(
            Reason.NOT_OBJECT, f"value: expected a JSON object, got {type(doc).__name__}"
        )
    user_id = _id_field(doc, "user_id")
    if isinstance(user_id, Rejection):
        return user_id
    item_id = _id_field(doc, "item_id")
    if isinstance(item_id, Rejection):
        return item_id
    if "ts" not in doc:
        return Rejection(Reason.MISSING_FIELD, "ts: required")
    ts = _number_field(doc["ts"], "ts")
    if isinstance(ts, Rejection):
        return ts
    weight = 1.0
    if "weight" in doc:
        w = _number_field(doc["weight"], "weight")
        if isinstance(w, Rejection):
            return w
        if not MIN_WEIGHT <= w <= MAX_WEIGHT:
            return Rejection(Reason.BAD_FIELD, f"weight: must be in [{MIN_WEIGHT}, {MAX_WEIGHT}]")
        weight = w
    event_type = doc.get("type")
    if event_type is not None:
        if not isinstance(event_type, str) or not 1 <= len(event_type) <= MAX_ID_CHARS:
            return Rejection(Reason.BAD_FIELD, "type: expected a string of 1-256 characters")
        if rules.type_weights:
            multiplier = rules.type_weights.get(event_type)
            if multiplier is None:
                return Rejection(Reason.UNKNOWN_TYPE, f"type: {event_type!r} has no weight")
            weight *= multiplier
    if key is None:
        return Rejection(Reason.KEY_MISMATCH, "key: missing; the key must be the user_id")
    if key != user_id.encode():
        return Rejection(Reason.KEY_MISMATCH, "key: differs from user_id")
    if ts > now + rules.max_future_skew:
        return Rejection(
            Reason.FUTURE_TS,
            f"ts: {ts} is more than {rules.max_future_skew:g}s after the clock ({now})",
        )
    return Interaction(user_id=user_id, item_id=item_id, ts=ts, weight=weight, type=event_type)
