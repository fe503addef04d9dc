from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lte_core.events import (
    EventRules,
    Interaction,
    Reason,
    Rejection,
    parse_interaction,
    plain_interaction,
)

NOW = 1_700_000_000.0
RULES = EventRules(max_future_skew=60.0, max_record_bytes=1024)


def _ok(**fields: object) -> tuple[bytes, bytes]:
    doc: dict[str, object] = {"user_id": "u1", "item_id": "i1", "ts": NOW - 10}
    doc.update(fields)
    return b"u1", orjson.dumps(doc)


def test_valid_record() -> None:
    key, value = _ok(weight=2.5, type="cart")
    parsed = parse_interaction(key, value, NOW, RULES)
    assert parsed == Interaction("u1", "i1", NOW - 10, 2.5, "cart")


@pytest.mark.parametrize(
    ("key", "value", "reason", "field"),
    [
        (b"u1", b"{not json", Reason.NOT_JSON, "value"),
        (b"u1", None, Reason.NOT_JSON, "value"),
        (b"u1", b"[1,2]", Reason.NOT_OBJECT, "value"),
        (b"u1", b'{"item_id":"i","ts":1}', Reason.MISSING_FIELD, "user_id"),
        (b"u1", b'{"user_id":"u1","ts":1}', Reason.MISSING_FIELD, "item_id"),
        (b"u1", b'{"user_id":"u1","item_id":"i"}', Reason.MISSING_FIELD, "ts"),
        (b"u1", b'{"user_id":1,"item_id":"i","ts":1}', Reason.BAD_FIELD, "user_id"),
        (b"u1", b'{"user_id":"","item_id":"i","ts":1}', Reason.BAD_FIELD, "user_id"),
        (b"u1", b'{"user_id":"u1","item_id":"i","ts":"1"}', Reason.BAD_FIELD, "ts"),
        (b"u1", b'{"user_id":"u1","item_id":"i","ts":true}', Reason.BAD_FIELD, "ts"),
        (b"u1", b'{"user_id":"u1","item_id":"i","ts":1e999}', Reason.NOT_JSON, "value"),
        (b"u1", b'{"user_id":"u1","item_id":"i","ts":1,"weight":0}', Reason.BAD_FIELD, "weight"),
        (b"u1", b'{"user_id":"u1","item_id":"i","ts":1,"weight":-1}', Reason.BAD_FIELD, "weight"),
        (b"u1", b'{"user_id":"u1","item_id":"i","ts":1,"type":5}', Reason.BAD_FIELD, "type"),
        (b"u2", b'{"user_id":"u1","item_id":"i","ts":1}', Reason.KEY_MISMATCH, "key"),
        (None, b'{"user_id":"u1","item_id":"i","ts":1}', Reason.KEY_MISMATCH, "key"),
        (
            b"u1",
            orjson.dumps({"user_id": "u1", "item_id": "i", "ts": NOW + 61}),
            Reason.FUTURE_TS,
            "ts",
        ),
        (
            b"u1",
            b'{"user_id":"u1","item_id":"' + b"x" * 2000 + b'","ts":1}',
            Reason.TOO_LARGE,
            "value",
        ),
        (
            b"u1",
            orjson.dumps({"user_id": "u1", "item_id": "i" * 257, "ts": 1}),
            Reason.BAD_FIELD,
            "item_id",
        ),
    ],
)
def test_rejections_name_reason_and_field(
    key: bytes | None, value: bytes | None, reason: str, field: str
) -> None:
    parsed = parse_interaction(key, value, NOW, RULES)
    assert isinstance(parsed, Rejection)
    assert parsed.reason == reason
    assert parsed.detail.startswith(f"{field}:")


def test_nan_is_rejected() -> None:
    # orjson refuses NaN literals, which is what producers of broken JSON send.
    parsed = parse_interaction(b"u1", b'{"user_id":"u1","item_id":"i","ts":NaN}', NOW, RULES)
    assert isinstance(parsed, Rejection) and parsed.reason == Reason.NOT_JSON


def test_type_weights() -> None:
    rules = EventRules(type_weights={"view": 1.0, "order": 5.0})
    parsed = parse_interaction(*_ok(type="order", weight=2.0), NOW, rules)
    assert isinstance(parsed, Interaction) and parsed.weight == 10.0
    parsed = parse_interaction(*_ok(type="refund"), NOW, rules)
    assert isinstance(parsed, Rejection) and parsed.reason == Reason.UNKNOWN_TYPE


@given(st.binary(max_size=300), st.one_of(st.none(), st.binary(max_size=20)))
def test_garbage_never_raises(value: bytes, key: bytes | None) -> None:
    assert isinstance(parse_interaction(key, value, NOW, RULES), Interaction | Rejection)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


FIELDS = ["user_id", "item_id", "ts", "weight", "type", "x"]


def mostly(
    valid: st.SearchStrategy[object], other: st.SearchStrategy[object]
) -> st.SearchStrategy[object]:
    """``valid`` three times in four, else ``other``."""
    return st.sampled_from([True, True, True, False]).flatmap(lambda ok: valid if ok else other)


# Arbitrary objects are almost never valid records (none in hundreds of examples); these
# start from a valid record's shape with each field usually valid, so both verdicts are common.
REQUIRED = {
    "user_id": mostly(st.just("u1"), st.sampled_from(["u2", ""]) | json_values),
    "item_id": mostly(st.text(min_size=1, max_size=3), json_values),
    "ts": mostly(
        st.floats(NOW - 1e6, NOW + RULES.max_future_skew) | st.integers(0, int(NOW)),
        st.floats(NOW + RULES.max_future_skew, 1e300, exclude_min=True) | json_values,
    ),
}
plain_shaped = st.fixed_dictionaries(REQUIRED)
near_valid = st.fixed_dictionaries(
    REQUIRED,
    optional={
        "weight": mostly(st.floats(0.01, 5.0), st.floats(-1.0, 0.0) | json_values),
        "type": mostly(st.text(min_size=1, max_size=3), json_values),
        "x": json_values,
    },
)
objects = st.dictionaries(st.sampled_from(FIELDS), json_values) | near_valid | plain_shaped


@given(objects)
def test_arbitrary_objects_are_accepted_only_when_valid(doc: dict[str, object]) -> None:
    parsed = parse_interaction(b"u1", orjson.dumps(doc), NOW, RULES)
    if isinstance(parsed, Interaction):
        assert doc["user_id"] == "u1" and isinstance(doc["item_id"], str)
        assert isinstance(doc["ts"], int | float) and not isinstance(doc["ts"], bool)
        assert (parsed.user_id, parsed.item_id, parsed.ts) == ("u1", doc["item_id"], doc["ts"])
        assert parsed.ts <= NOW + RULES.max_future_skew
        assert parsed.weight > 0 and parsed.weight == doc.get("weight", 1.0)
        assert parsed.type == doc.get("type")


@given(
    st.dictionaries(st.sampled_from(FIELDS), json_values | st.just("u1")) | objects,
    st.sampled_from([b"u1", b"u2", None]),
)
def test_fast_path_never_disagrees_with_the_rules(
    doc: dict[str, object], key: bytes | None
) -> None:
    value = orjson.dumps(doc)
    fast = plain_interaction(
        key, value, max_bytes=RULES.max_record_bytes, latest_ts=NOW + RULES.max_future_skew
    )
    full = parse_interaction(key, value, NOW, RULES)
    if fast is not None:
        assert isinstance(full, Interaction)
        assert (full.user_id, full.item_id, full.ts, full.weight) == (*fast, 1.0)


def test_fast_path_takes_the_common_record() -> None:
    key, value = _ok()
    assert plain_interaction(key, value, max_bytes=1024, latest_ts=NOW) == ("u1", "i1", NOW - 10)
    assert plain_interaction(b"u2", value, max_bytes=1024, latest_ts=NOW) is None
    assert plain_interaction(key, value, max_bytes=1024, latest_ts=NOW - 11) is None
