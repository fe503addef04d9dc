"""``lte serve``: the read API on its own, over a store some refresher writes.

Readiness follows the store: it is pinged every :data:`PING_SECONDS`, and ``/readyz``
answers 503 while it does not answer, so a load balancer stops routing to an instance that
can only reply 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import CollectorRegistry

from lte_runtime.crash_only import supervised
from serving.errors import StoreUnavailableError
from serving.online_store import OnlineStore, bounded_store_call
from serving.read_api import build_app, start_site
from serving.settings import ServeSettings
from serving.store_url import open_store

PING_SECONDS = 1.0
log = logging.getLogger("lte.serve")


class StoreWatch:
    """Pings the store; a ping that takes longer than ``timeout`` counts as down, so
    ``/readyz`` follows a hung store within about ``PING_SECONDS + timeout``."""

    def __init__(self, store: OnlineStore, timeout: float = 1.0) -> None:
        self._store = store
        self._timeout = timeout
        self._ok = False

    def readiness(self) -> tuple[bool, str]:
        if self._ok:
            return True, f"reading {self._store.describe()}"
        return False, f"the store {self._store.describe()} does not answer"

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await bounded_store_call(self._store.ping(), self._timeout, self._store)
            except StoreUnavailableError as exc:
                if self._ok:
                    log.warning("the store stopped answering: %s", exc)
                self._ok = False
            else:
                if not self._ok:
                    log.info("the store answers: %s", self._store.describe())
                self._ok = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), PING_SECONDS)


async def serve(settings: ServeSettings, stop: asyncio.Event) -> None:
    registry = CollectorRegistry()
    store = open_store(settings.store, writer=False)
    try:
        watch = StoreWatch(store, settings.api.read_timeout)
        app = build_app(store, settings.api, registry, watch.readiness)
        runner, port = await start_site(
            app, settings.api.host, settings.api.port, header_timeout=settings.api.header_timeout
        )
        log.info(
            "read API on %s:%d over %s (auth %s)",
            settings.api.host,
            port,
            store.describe(),
            "on" if settings.api.token else "off",
        )
        try:
            await supervised("the store watch", watch.run(stop))
        finally:
            await runner.cleanup()
    finally:
        await store.close()
