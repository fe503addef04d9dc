"""The Quix Streams peer: each user's running sum of item vectors in Quix's RocksDB state.

Less work than ``lte worker`` (no lagged window, no updates produced, no per-event
changelog of its own beyond Quix's state changelog); it is the strongest Python stream
processor measured here. Run as its own process by ``bench/runtimes.py`` and configured by
``PEER_*`` variables; it prints one JSON line ``{"events_s": …}`` — the rate from its first
to its ``PEER_EVENTS``-th processed event — and stops.

The embedded broker describes topics without ``retention.ms``, which Quix reads to derive
its changelog topic's config: it is defaulted to ``-1`` (keep forever) here.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import numpy as np
import orjson
from quixstreams import Application
from quixstreams.models.topics.manager import TopicManager

from lte_core.basis import BasisArtifact

_derive = vars(TopicManager)["derive_topic_config"].__func__


def _derive_with_retention(cls: Any, topics: Any) -> Any:
    for topic in topics:
        topic.broker_config.extra_config.setdefault("retention.ms", "-1")
    return _derive(cls, topics)


setattr(TopicManager, "derive_topic_config", classmethod(_derive_with_retention))  # noqa: B010

BASIS = BasisArtifact.load(os.environ["PEER_BASIS"], verify=False)
EVENTS = int(os.environ["PEER_EVENTS"])

app = Application(
    broker_address=os.environ["PEER_BROKER"],
    consumer_group=os.environ["PEER_GROUP"],
    auto_offset_reset="earliest",
    state_dir=os.environ["PEER_STATE_DIR"],
)
seen = {"n": 0, "first": 0.0}


def add(value: dict[str, Any], state: Any) -> None:
    row = BASIS.row_of(value["item_id"])
    if row is not None:
        total = state.get("sum")
        vector = BASIS.item_vectors[row]
        state.set("sum", (vector if total is None else np.add(total, vector)).tolist())
        state.set("n", state.get("n", 0) + 1)
    seen["n"] += 1
    if seen["n"] == 1:
        seen["first"] = time.perf_counter()
    elif seen["n"] == EVENTS:
        rate = (EVENTS - 1) / (time.perf_counter() - seen["first"])
        sys.stdout.write(orjson.dumps({"events_s": rate}).decode() + "\n")
        sys.stdout.flush()
        app.stop()


sdf = app.dataframe(app.topic(os.environ["PEER_TOPIC"], value_deserializer="json"))
sdf = sdf.update(add, stateful=True)

if __name__ == "__main__":
    app.run()
