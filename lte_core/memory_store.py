"""An in-memory window store: the reference :class:`~lte_core.engine.WindowReader` used by
unit tests, benchmarks of the core and offline tools. The worker's RocksDB store keeps the
same logical layout on disk."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np

from lte_core.engine import EngineResult, RangeRequests, RangeResult
from lte_core.head import NO_BUCKET

Record = tuple[int, int, int, float]  # bucket, offset, item, weight


class MemoryWindowStore:
    def __init__(self) -> None:
        self.heads: dict[bytes, bytes] = {}
        self.events: dict[bytes, list[Record]] = {}

    def read_heads(self, users: Sequence[bytes]) -> list[bytes | None]:
        return [self.heads.get(u) for u in users]

    def read_ranges(self, users: Sequence[bytes], requests: RangeRequests) -> RangeResult:
        req: list[int] = []
        found: list[Record] = []
        nxt: list[int] = []
        for j, (u, lo, hi) in enumerate(
            zip(requests.user.tolist(), requests.lo.tolist(), requests.hi.tolist(), strict=True)
        ):
            records = self.events.get(users[u], [])
            i = bisect.bisect_left(records, (lo, -(2**63)))
            while i < len(records) and records[i][0] < hi:
                req.append(j)
                found.append(records[i])
                i += 1
            nxt.append(records[i][0] if i < len(records) else int(NO_BUCKET))
        cols = list(zip(*found, strict=True)) if found else [(), (), (), ()]
        return RangeResult(
            request=np.asarray(req, dtype=np.int64),
            bucket=np.asarray(cols[0], dtype=np.int64),
            offset=np.asarray(cols[1], dtype=np.int64),
            item=np.asarray(cols[2], dtype=np.uint32),
            weight=np.asarray(cols[3], dtype=np.float32),
            next_bucket=np.asarray(nxt, dtype=np.int64),
        )

    def commit(self, users: Sequence[bytes], result: EngineResult) -> None:
        for user, head in zip(users, result.heads, strict=True):
            if head is None:
                self.heads.pop(user, None)
            else:
                self.heads[user] = head
        gone = result.delete
        for u, b, o in zip(
            gone.user.tolist(), gone.bucket.tolist(), gone.offset.tolist(), strict=True
        ):
            records = self.events[users[u]]
            i = bisect.bisect_left(records, (b, o))
            if i < len(records) and records[i][:2] == (b, o):
                del records[i]
        new = result.put
        for u, b, o, item, w in zip(
            new.user.tolist(),
            new.bucket.tolist(),
            new.offset.tolist(),
            new.item.tolist(),
            new.weight.tolist(),
            strict=True,
        ):
            records = self.events.setdefault(users[u], [])
            i = bisect.bisect_left(records, (b, o))
            if i < len(records) and records[i][:2] == (b, o):
                records[i] = (b, o, item, w)
            else:
                records.insert(i, (b, o, item, w))
        for user in [u for u, r in self.events.items() if not r]:
            del self.events[user]

    def stored_events(self, user: bytes) -> int:
        return len(self.events.get(user, []))
