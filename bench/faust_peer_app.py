"""The naive peer: the LTE job written the way a Faust tutorial would.

One table get and one table put per event (the user's full history in a Faust table backed
by RocksDB with a changelog), the window mean recomputed from that history, one ``send`` per
event. ``bench/peer.py`` runs it as a worker process and compares it with ``lte worker``.
Configured by environment variables (``PEER_*``) because Faust owns the command line.
"""

from __future__ import annotations

import os
from typing import Any

import faust
import numpy as np
import orjson

from lte_core.basis import BasisArtifact
from lte_core.window import WindowSpec

BASIS = BasisArtifact.load(os.environ["PEER_BASIS"], verify=False)
SPEC = WindowSpec.parse(os.environ["PEER_WINDOW"], os.environ["PEER_LAG"], "1d")
NOW = float(os.environ["PEER_NOW"])
LO = SPEC.start_bucket(NOW) * SPEC.bucket
HI = SPEC.end_bucket(NOW) * SPEC.bucket

app = faust.App(
    os.environ["PEER_APP_ID"],
    broker=f"kafka://{os.environ['PEER_BROKER']}",
    store="rocksdb://",
    datadir=os.environ["PEER_DATADIR"],
    broker_session_timeout=6,
    web_port=int(os.environ["PEER_WEB_PORT"]),
    web_host="127.0.0.1",
)
interactions = app.topic(os.environ["PEER_TOPIC"], value_serializer="raw", key_serializer="raw")
updates = app.topic(os.environ["PEER_UPDATES"], value_serializer="raw", key_serializer="raw")
history = app.Table("history", default=list, partitions=4)


@app.agent(interactions)
async def process(stream: Any) -> None:
    async for event in stream:
        doc = orjson.loads(event)
        user = doc["user_id"]
        row = BASIS.row_of(doc["item_id"])
        if row is None:
            continue
        events = history[user]
        events.append([row, doc["ts"]])
        history[user] = events
        inside = [r for r, ts in events if LO <= ts < HI]
        vector = BASIS.item_vectors[inside].astype(np.float64).mean(axis=0) if inside else None
        await updates.send(
            key=user.encode(),
            value=orjson.dumps(
                {"user_id": user, "n_events": len(inside), "vector": vector},
                option=orjson.OPT_SERIALIZE_NUMPY,
            ),
        )


if __name__ == "__main__":
    app.main()
