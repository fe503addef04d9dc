"""Fencing without transactions (issue 17): the accepted-history rule a restore applies to
a changelog that a zombie wrote into after a newer owner's fence. Real RocksDB files; the
changelog records are built as a consumer would see them (offset, key, value, headers)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest
from aiokafka import AIOKafkaConsumer
from hypothesis import given
from hypothesis import strategies as st

from lte_core.window import WindowSpec
from streams.changelog import ChangelogRestorer
from streams.fencing import (
    EPOCH_HEADER,
    FENCE_KEY,
    META_FENCE,
    META_TAIL,
    EpochFilter,
    epoch_bytes,
    epoch_headers,
    fence_epoch,
    fence_value,
    pack_tail,
    record_epoch,
    unpack_tail,
)
from streams.window_store import HEAD, WindowStore, event_prefix

SPEC = WindowSpec(window=10 * 60, lag=60, bucket=60)


@dataclass(frozen=True)
class Rec:
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


class Log:
    """A changelog partition: records appended with their writer's epoch."""

    def __init__(self) -> None:
        self.records: list[Rec] = []

    def put(self, key: bytes, value: bytes | None, epoch: int | None) -> None:
        headers = () if epoch is None else epoch_headers(epoch)
        self.records.append(Rec(len(self.records), key, value, headers))

    def fence(self, epoch: int) -> None:
        self.put(FENCE_KEY, epoch_bytes(epoch), epoch)


def _restorer() -> ChangelogRestorer:
    consumer = cast(AIOKafkaConsumer, None)  # apply_accepted never touches the consumer
    return ChangelogRestorer(consumer, "t", SPEC, d=2, decayed=False, config=b"c")


def _restore(store: WindowStore, records: list[Rec], chunk: int = 3) -> int:
    epochs = EpochFilter(fence_epoch(store.get_meta(META_FENCE)))
    applied = 0
    for i in range(0, len(records), chunk):
        applied += _restorer().apply_accepted(store, records[i : i + chunk], epochs)
    return applied


def _ev(user: bytes) -> bytes:
    """An event record's key (values are stored raw, unlike heads)."""
    return event_prefix(user) + bytes(16)


def _head(store: WindowStore, user: bytes) -> bytes | None:
    return store.get_raw(_ev(user))


def test_records_without_an_epoch_restore_as_before() -> None:
    epochs = EpochFilter()
    assert epochs.accept(HEAD + b"u", b"x", 0)
    assert epochs.accept(FENCE_KEY, epoch_bytes(1), 1)
    assert not epochs.accept(HEAD + b"u", b"y", 0), "an old record after a fence is stale"
    assert record_epoch(None) == 0 and record_epoch([("other", b"1")]) == 0
    assert record_epoch([(EPOCH_HEADER, epoch_bytes(7))]) == 7


def test_a_zombie_writing_after_the_new_owner_fenced_is_not_restored(tmp_path: Path) -> None:
    log = Log()
    log.put(b"m" + b"config", b"c", None)  # a changelog written before fencing existed
    log.put(_ev(b"u1"), b"old-1", None)
    log.fence(1)  # A takes over and claims epoch 1
    log.put(_ev(b"u1"), b"A-1", 1)
    log.put(_ev(b"u2"), b"A-2", 1)
    log.fence(2)  # A froze; B restored and claimed epoch 2
    log.put(_ev(b"u1"), b"B-1", 2)
    log.put(_ev(b"u2"), b"zombie", 1)  # A wakes up and finishes its batch
    log.put(_ev(b"u3"), b"zombie", 1)
    log.fence(1)  # A's stale claim after it rejoined is ignored too
    log.put(_ev(b"u1"), b"zombie", 1)
    log.put(_ev(b"u3"), b"B-3", 2)
    store = WindowStore(tmp_path / "fresh")
    applied = _restore(store, log.records)
    assert _head(store, b"u1") == b"B-1"
    assert _head(store, b"u2") == b"A-2"
    assert _head(store, b"u3") == b"B-3"
    assert fence_epoch(store.get_meta(META_FENCE)) == 2
    assert applied == len(log.records) - 4
    offset, epoch, key = unpack_tail(store.get_meta(META_TAIL) or b"")
    assert (offset, epoch, key) == (len(log.records) - 1, 2, _ev(b"u3"))
    store.close()


def test_a_restore_resumed_from_the_local_position_keeps_the_epoch(tmp_path: Path) -> None:
    """The accepted epoch survives in the store, so a restore from the middle of the log
    (after the newer fence) still rejects the zombie's records."""
    log = Log()
    log.fence(1)
    log.put(_ev(b"u"), b"A", 1)
    log.fence(2)
    store = WindowStore(tmp_path / "s")
    _restore(store, log.records)
    store.close()
    log.put(_ev(b"u"), b"zombie", 1)
    log.put(_ev(b"v"), b"B", 2)
    store = WindowStore(tmp_path / "s")
    _restore(store, log.records[3:])
    assert (_head(store, b"u"), _head(store, b"v")) == (b"A", b"B")
    store.close()


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5), st.integers(0, 3)), max_size=40))
def test_the_accepted_history_equals_a_brute_force_replay(
    steps: list[tuple[bool, int, int]],
) -> None:
    """Whatever the interleaving of fences and writes of several epochs: a record is kept
    exactly when no fence before it claimed a higher epoch than its own, and a fence only
    counts when it exceeds every fence before it."""
    epochs = EpochFilter()
    for i, (is_fence, epoch, user) in enumerate(steps):
        before = [e for f, e, _ in steps[:i] if f]
        current = max(before, default=0)
        if is_fence:
            assert epochs.accept(FENCE_KEY, epoch_bytes(epoch), epoch) == (epoch > current)
        else:
            assert epochs.accept(HEAD + bytes([user]), b"v", epoch) == (epoch >= current)
    assert epochs.highest == max((e for _, e, _ in steps), default=0)


def test_two_claims_of_the_same_epoch_only_the_first_counts(tmp_path: Path) -> None:
    """Two workers that restored the same log both claim epoch 1; the log accepts the first
    fence; the second worker sees a different accepted fence value and must stop."""
    first, second = fence_value(1), fence_value(1)
    assert first != second and fence_epoch(first) == fence_epoch(second) == 1
    log = Log()
    log.put(FENCE_KEY, first, 1)
    log.put(FENCE_KEY, second, 1)
    store = WindowStore(tmp_path / "s")
    _restore(store, log.records)
    assert store.get_meta(META_FENCE) == first
    store.close()


@pytest.mark.parametrize("key", [None, b"", HEAD + b"user"])
def test_the_tail_round_trips(key: bytes | None) -> None:
    assert unpack_tail(pack_tail(12345, 7, key)) == (12345, 7, key or b"")
