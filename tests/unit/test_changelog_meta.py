"""The changelog carries the partition's clock high-water and counters (issue 17, item 5):
a partition restored on a new disk keeps its clock (never earlier than either copy) and its
head/event counts, without scanning the heads. Real RocksDB files, no broker: the restore's
``apply`` is what turns changelog records into a store."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from aiokafka import AIOKafkaConsumer

from lte_core.state import LaggedWindow
from lte_core.window import WindowSpec
from streams.changelog import ChangelogRestorer
from streams.window_store import (
    CLOCK_FORMAT,
    HEAD,
    META,
    META_CHANGELOG,
    META_CLOCK,
    META_EVENTS,
    META_USERS,
    WindowStore,
)

SPEC = WindowSpec(window=10 * 60, lag=60, bucket=60)


def _int(value: int) -> bytes:
    return value.to_bytes(8, "big", signed=True)


def _restorer() -> ChangelogRestorer:
    consumer = cast(AIOKafkaConsumer, None)  # apply() never touches the consumer
    return ChangelogRestorer(consumer, "t", SPEC, d=2, decayed=False, config=b"c")


def test_a_restore_on_a_new_disk_keeps_the_clock_and_the_counters(tmp_path: Path) -> None:
    store = WindowStore(tmp_path / "new-disk")
    head = LaggedWindow(SPEC, 2).to_bytes()
    records = [
        (HEAD + b"u1", head),
        (META + b"something-local", b"x"),
        (META + META_CLOCK, CLOCK_FORMAT.pack(1_700_000_500.0)),
        (META + META_USERS, _int(3)),
        (META + META_EVENTS, _int(17)),
    ]
    _restorer().apply(store, records, last_offset=41)
    assert CLOCK_FORMAT.unpack(store.get_meta(META_CLOCK) or b"")[0] == 1_700_000_500.0
    assert (store.get_int(META_USERS), store.get_int(META_EVENTS)) == (3, 17)
    assert store.get_int(META_CHANGELOG) == 41
    assert store.read_heads([b"u1"]) == [head]  # state records still restore, of course
    assert store.get_meta(b"something-local") is None
    # a later chunk with an older clock (records of a slower writer) cannot move it back
    _restorer().apply(
        store,
        [(META + META_CLOCK, CLOCK_FORMAT.pack(1_700_000_100.0)), (META + META_USERS, _int(4))],
        last_offset=42,
    )
    assert CLOCK_FORMAT.unpack(store.get_meta(META_CLOCK) or b"")[0] == 1_700_000_500.0
    assert store.get_int(META_USERS) == 4
    store.close()


def test_a_local_clock_ahead_of_the_changelog_stays(tmp_path: Path) -> None:
    store = WindowStore(tmp_path / "disk")
    store.put_meta(META_CLOCK, CLOCK_FORMAT.pack(2e9))
    _restorer().apply(store, [(META + META_CLOCK, CLOCK_FORMAT.pack(1e9))], last_offset=0)
    assert CLOCK_FORMAT.unpack(store.get_meta(META_CLOCK) or b"")[0] == 2e9
    store.close()
