"""The batch partitioner against aiokafka's pure-Python murmur2 (Kafka's reference port)."""

from __future__ import annotations

from aiokafka.partitioner import murmur2
from hypothesis import given
from hypothesis import strategies as st

from lte_runtime.kafka.key_partitioner import murmur2_many, partition_column


@given(st.lists(st.binary(max_size=40), max_size=60))
def test_hash_matches_the_reference_for_any_keys(keys: list[bytes]) -> None:
    assert murmur2_many(keys).tolist() == [murmur2(k) & 0xFFFFFFFF for k in keys]


@given(st.lists(st.binary(min_size=1, max_size=24), min_size=1, max_size=60), st.integers(1, 97))
def test_partition_is_the_default_partitioners(keys: list[bytes], n: int) -> None:
    assert partition_column(keys, n).tolist() == [(murmur2(k) & 0x7FFFFFFF) % n for k in keys]


def test_known_kafka_values() -> None:
    # Kafka's own test vectors (org.apache.kafka.common.utils.UtilsTest#testMurmur2),
    # as signed Java ints.
    cases = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536}
    got = murmur2_many(list(cases)).astype("int64").tolist()
    assert [(g + 2**31) % 2**32 - 2**31 for g in got] == list(cases.values())
