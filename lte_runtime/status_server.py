"""``/metrics``, ``/healthz`` and ``/readyz`` for a process, on aiohttp.

Liveness says the event loop answers and, when the process supplies ``alive``, that its
long-running loops still make progress (:class:`lte_runtime.crash_only.Heartbeat`);
readiness is a callable the process supplies (the worker: partitions restored; the
refresher: the store answers), so orchestrators route work only to processes that can do it.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

Readiness = Callable[[], tuple[bool, str]]


def add_status_routes(
    app: web.Application,
    registry: CollectorRegistry,
    ready: Readiness,
    alive: Readiness | None = None,
) -> None:
    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        ok, reason = alive() if alive is not None else (True, "event loop answers")
        return web.json_response(
            {"status": "ok" if ok else "dead", "reason": reason}, status=200 if ok else 503
        )

    async def readyz(_: web.Request) -> web.Response:
        ok, reason = ready()
        return web.json_response(
            {"status": "ready" if ok else "not_ready", "reason": reason}, status=200 if ok else 503
        )

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


class StatusServer:
    """A small aiohttp site serving the status routes on ``host:port`` (port 0 = any free)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        ready: Readiness,
        *,
        host: str,
        port: int,
        alive: Readiness | None = None,
    ) -> None:
        self._app = web.Application()
        add_status_routes(self._app, registry, ready, alive)
        self._runner = web.AppRunner(self._app, access_log=None)
        self._host = host
        self.port = port

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None)
        if sockets:
            self.port = int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        await self._runner.cleanup()
