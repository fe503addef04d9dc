"""``encode_produce`` writes the bytes of aiokafka's own schema encoding for every produce
request version it replaces (the oracle is aiokafka 0.14's ``Schema.encode``, called
directly, so the check holds after ``install``)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lte_runtime.kafka.produce_request import STRUCTS, encode_produce, install

_batch = st.one_of(st.none(), st.binary(max_size=300))
_topics = st.lists(
    st.tuples(
        st.text(max_size=20),
        st.lists(st.tuples(st.integers(-(2**31), 2**31 - 1), _batch), max_size=4),
    ),
    max_size=4,
)


def _struct(cls: type[Any], txn: str | None, acks: int, timeout: int, topics: Any) -> Any:
    if cls.API_VERSION < 3:
        return cls(acks, timeout, topics)
    return cls(txn, acks, timeout, topics)


@settings(max_examples=200, deadline=None)
@given(
    version=st.integers(min_value=0, max_value=len(STRUCTS) - 1),
    txn=st.one_of(st.none(), st.text(max_size=10)),
    acks=st.integers(-1, 1),
    timeout=st.integers(0, 2**31 - 1),
    topics=_topics,
)
def test_same_bytes_as_aiokafkas_schema(
    version: int, txn: str | None, acks: int, timeout: int, topics: Any
) -> None:
    install()
    cls = STRUCTS[version]
    request = _struct(cls, txn, acks, timeout, topics)
    reference = cls.SCHEMA.encode([request.__dict__[name] for name in cls.SCHEMA.names])
    assert encode_produce(request) == reference
    assert request.encode() == reference
