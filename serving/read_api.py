"""The read API (aiohttp): the recommender's way to an LTE.

* ``GET /v1/lte/{user_id}[?basis_version=..&encoder=..]`` → 200 with the stored update's
  fields plus ``stored_at``; an emptied window is 200 with ``n_events: 0`` and null vectors;
  404 when the store has no entry for the user.
* ``POST /v1/lte:batchGet`` with ``{"user_ids": [...], "basis_version"?, "encoder"?}`` →
  200 with ``results`` aligned to ``user_ids`` (``null`` where there is no entry).
* Both answer JSON by default, and the Avro binary form (:mod:`serving.binary_body`) to a
  request whose ``Accept`` prefers ``application/octet-stream`` or
  ``application/vnd.lte.update+avro``; errors are always JSON.
* ``/healthz``, ``/readyz``, ``/metrics`` (never behind the token: orchestrators and
  Prometheus call them).

Every error is JSON ``{"error": {"code", "message"}}``; the message names the parameter —
also for requests aiohttp's HTTP parser refuses (never echoing the input). Every store call
is bounded by ``read_timeout`` (a hung store answers 503 fast), a request head must arrive
within ``header_timeout`` and a body within ``body_timeout``; a client that goes away
mid-request is counted (status 499), not logged as an error.
When no ``basis_version``/``encoder`` is given and none is configured, the most recently
written pair is used (from the store's registry, re-read at most once a second).

Answers are built from the stored bytes (:meth:`OnlineStore.get_many_raw`): the binary form
copies the float32 bytes into the record, and JSON formats the floats once (the coefficients
of an identity basis are the vector's text), with no update object per read
(:func:`~serving.store_format.entry_json`, :func:`~serving.store_format.entry_record`, both
tested equal to the reference encoders of the decoded entry).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from prometheus_client import CollectorRegistry

from lte_runtime.status_server import Readiness, add_status_routes
from serving.binary_body import (
    BASIS_HEADER,
    BINARY_MEDIA_TYPES,
    ENCODER_HEADER,
    STORED_AT_HEADER,
    frame_batch,
    header_text,
)
from serving.errors import StoreDataError, StoreUnavailableError
from serving.metrics import ApiMetrics
from serving.online_store import (
    OnlineStore,
    StoreKey,
    VersionPair,
    bounded_store_call,
)
from serving.read_coalescer import ReadCoalescer
from serving.settings import MAX_USER_ID_CHARS, ApiSettings
from serving.store_format import entry_json, entry_record

ROUTE_ONE = "/v1/lte/{user_id}"
ROUTE_BATCH = "/v1/lte:batchGet"
VERSIONS_CACHE_SECONDS = 1.0
CLIENT_CLOSED = 499
OUTAGE_LOG_SECONDS = 10.0
_PAIR_FIELDS = ("basis_version", "encoder")
_BATCH_FIELDS = ("user_ids", *_PAIR_FIELDS)
JSON = "application/json"
_OFFERED = (JSON, *BINARY_MEDIA_TYPES)

log = logging.getLogger("lte.api")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")


class ApiError(Exception):
    """A request the API answers with a 4xx/5xx JSON error."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def json_response(doc: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY),
        status=status,
        content_type="application/json",
    )


def error_response(status: int, code: str, message: str) -> web.Response:
    response = json_response({"error": {"code": code, "message": message}}, status)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="lte"'
    return response


_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


@functools.lru_cache(maxsize=256)
def negotiate(accept: str) -> str:
    """The media type to answer a 200 with, from the request's ``Accept`` (RFC 9110 12.5.1):
    the offered type with the highest quality, the most specific range deciding a type's
    quality; JSON on ties (``*/*``), when nothing offered is acceptable, or with no header —
    an API that answered 406 to a sloppy header would break clients that worked before."""
    exact: dict[str, float] = {}
    wild: dict[str, float] = {}
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        media = media.lower()
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        (wild if media.endswith("/*") else exact)[media] = q
    best, best_q = JSON, 0.0
    for media in _OFFERED:
        q = exact.get(media, wild.get(media.split("/")[0] + "/*", wild.get("*/*", 0.0)))
        if q > best_q:
            best, best_q = media, q
    return best


def _authorise(request: web.Request, expected: bytes) -> None:
    # aiohttp keeps undecodable header bytes as surrogates; they compare unequal, never raise
    given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(given, expected):
        raise ApiError(
            401,
            "unauthorized",
            "wrong API token" if given else "send the API token as 'Authorization: Bearer <token>'",
        )


def _checked_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_USER_ID_CHARS:
        raise ApiError(
            400, "bad_request", f"{what}: expected a string of 1-{MAX_USER_ID_CHARS} characters"
        )
    return value


class ReadApi:
    def __init__(self, store: OnlineStore, settings: ApiSettings, metrics: ApiMetrics) -> None:
        self._store = store
        self._single_reads = ReadCoalescer(store.get_many_raw)
        self._settings = settings
        self._metrics = metrics
        self._expected_auth = (
            f"Bearer {settings.token}".encode() if settings.token is not None else None
        )
        self._pairs: list[VersionPair] = []
        self._pairs_read_at = float("-inf")
        self._store_warned_at = float("-inf")
        self._latency: dict[tuple[str, int], Any] = {}

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Auth, JSON errors, and the latency histogram, for every route."""
        started = time.perf_counter()
        try:
            if self._expected_auth is not None and request.path.startswith("/v1/"):
                _authorise(request, self._expected_auth)
            response = await handler(request)
        except ApiError as exc:
            response = error_response(exc.status, exc.code, exc.message)
        except web.HTTPException as exc:
            code = _HTTP_CODES.get(exc.status, "http_error")
            response = error_response(exc.status, code, exc.reason)
        except StoreUnavailableError as exc:
            if time.monotonic() - self._store_warned_at > OUTAGE_LOG_SECONDS:
                self._store_warned_at = time.monotonic()
                log.warning("reads fail (answering 503): %s", exc)
            response = error_response(503, "store_unavailable", "the online store is down")
        except StoreDataError as exc:
            log.error("%s", exc)
            response = error_response(500, "corrupt_entry", str(exc))
        except ConnectionError:
            # the client went away (aiohttp cancels the read with ConnectionResetError): no
            # one to answer, nothing wrong here; 499 in the latency metric, as nginx counts it
            log.debug("client disconnected during %s %s", request.method, request.path)
            response = error_response(CLIENT_CLOSED, "client_closed", "client disconnected")
        except Exception:
            log.exception("unexpected error on %s %s", request.method, request.path)
            response = error_response(500, "internal", "unexpected error; see the server log")
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        histogram = self._latency.get((route, response.status))
        if histogram is None:  # a label lookup per request costs more than the observation
            histogram = self._metrics.request_seconds.labels(route, str(response.status))
            self._latency[route, response.status] = histogram
        histogram.observe(time.perf_counter() - started)
        return response

    async def get_one(self, request: web.Request) -> web.Response:
        user_id = _checked_id(request.match_info["user_id"], "user_id")
        query = self._pair_query(request)
        basis_version, encoder = await self._pair(**query)
        key = StoreKey(basis_version, encoder, user_id)
        found = await self._bounded(self._single_reads.get(key))
        if found is None:
            raise ApiError(
                404,
                "not_found",
                f"no LTE for user {user_id!r} under basis_version={basis_version} "
                f"encoder={encoder}",
            )
        media = negotiate(request.headers.get("Accept", JSON))
        if media == JSON:
            return web.Response(body=entry_json(key, found), headers=_JSON_HEADERS)
        record, stored_at = entry_record(key, found)
        response = _binary_response(record, media, basis_version, encoder)
        response.headers[STORED_AT_HEADER] = repr(stored_at)
        return response

    async def batch_get(self, request: web.Request) -> web.Response:
        if request.query:
            raise ApiError(
                400,
                "bad_request",
                f"unknown query parameter(s) {', '.join(sorted(request.query))}; "
                "put basis_version and encoder in the JSON body",
            )
        try:
            raw = await asyncio.wait_for(request.read(), self._settings.body_timeout)
        except TimeoutError as exc:
            raise ApiError(
                408,
                "request_timeout",
                f"body: not received within {self._settings.body_timeout:g}s",
            ) from exc
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            # orjson's message quotes the input; say where, not what
            raise ApiError(400, "bad_request", f"body: not JSON (at byte {exc.pos})") from exc
        if not isinstance(body, dict):
            raise ApiError(400, "bad_request", "body: expected a JSON object")
        unknown = sorted(set(body) - set(_BATCH_FIELDS))
        if unknown:
            raise ApiError(
                400,
                "bad_request",
                f"body: unknown field(s) {', '.join(unknown)}; expected {', '.join(_BATCH_FIELDS)}",
            )
        user_ids = body.get("user_ids")
        limit = self._settings.max_batch
        if not isinstance(user_ids, list) or not 1 <= len(user_ids) <= limit:
            raise ApiError(400, "bad_request", f"user_ids: expected a list of 1-{limit} user ids")
        users = [_checked_id(u, f"user_ids[{i}]") for i, u in enumerate(user_ids)]
        pair = {
            name: _checked_id(body[name], name)
            for name in _PAIR_FIELDS
            if body.get(name) is not None
        }
        basis_version, encoder = await self._pair(**pair)
        keys = [StoreKey(basis_version, encoder, user) for user in users]
        found = await self._bounded(self._store.get_many_raw(keys))
        media = negotiate(request.headers.get("Accept", JSON))
        if media != JSON:
            body = frame_batch(
                [
                    None if e is None else entry_record(k, e)
                    for k, e in zip(keys, found, strict=True)
                ]
            )
            return _binary_response(body, media, basis_version, encoder)
        results = [
            None if e is None else orjson.Fragment(entry_json(k, e))
            for k, e in zip(keys, found, strict=True)
        ]
        doc = {"basis_version": basis_version, "encoder": encoder, "results": results}
        return web.Response(body=orjson.dumps(doc), headers=_JSON_HEADERS)

    def _pair_query(self, request: web.Request) -> dict[str, str]:
        if not request.query_string:
            return {}
        unknown = sorted(set(request.query) - set(_PAIR_FIELDS))
        if unknown:
            raise ApiError(
                400,
                "bad_request",
                f"unknown query parameter(s) {', '.join(unknown)}; "
                f"expected {', '.join(_PAIR_FIELDS)}",
            )
        out: dict[str, str] = {}
        for name in _PAIR_FIELDS:
            values = request.query.getall(name, [])
            if len(values) > 1:
                raise ApiError(400, "bad_request", f"{name}: given {len(values)} times")
            if values:
                out[name] = _checked_id(values[0], name)
        return out

    async def _pair(
        self, basis_version: str | None = None, encoder: str | None = None
    ) -> tuple[str, str]:
        """The ``(basis_version, encoder)`` a request reads: as given, else the configured
        default, else the most recently written pair that matches what was given."""
        basis_version = basis_version or self._settings.basis_version
        encoder = encoder or self._settings.encoder
        if basis_version is not None and encoder is not None:
            return basis_version, encoder
        candidates = [
            p
            for p in await self._versions()
            if basis_version in (None, p.basis_version) and encoder in (None, p.encoder)
        ]
        if not candidates:
            wanted = f"basis_version={basis_version or '*'} encoder={encoder or '*'}"
            raise ApiError(404, "no_version", f"no LTE has been written for {wanted}")
        newest = max(candidates, key=lambda p: p.last_written_at)
        return newest.basis_version, newest.encoder

    async def _versions(self) -> list[VersionPair]:
        if time.monotonic() - self._pairs_read_at > VERSIONS_CACHE_SECONDS:
            self._pairs = await self._bounded(self._store.versions())
            self._pairs_read_at = time.monotonic()
        return self._pairs

    async def _bounded(self, call: Awaitable[T]) -> T:
        """``call``, or :class:`StoreUnavailableError` after ``read_timeout``: a hung store
        (Redis stopped, a dead connection) answers 503 now, not after the socket timeout."""
        return await bounded_store_call(call, self._settings.read_timeout, self._store)


#: ``Vary: Accept`` on every 200: a cache in front must not answer a JSON request with a
#: binary body, or the reverse.
_JSON_HEADERS = {"Content-Type": JSON, "Vary": "Accept"}


def _binary_response(body: bytes, media: str, basis_version: str, encoder: str) -> web.Response:
    return web.Response(body=body, headers=_binary_headers(media, basis_version, encoder))


@functools.lru_cache(maxsize=256)
def _binary_headers(media: str, basis_version: str, encoder: str) -> dict[str, str]:
    return {
        "Content-Type": media,
        BASIS_HEADER: header_text(basis_version),
        ENCODER_HEADER: header_text(encoder),
        "Vary": "Accept",
    }


def build_app(
    store: OnlineStore,
    settings: ApiSettings,
    registry: CollectorRegistry,
    ready: Readiness,
    alive: Readiness | None = None,
) -> web.Application:
    api = ReadApi(store, settings, ApiMetrics.create(registry))
    app = web.Application(
        middlewares=[api.middleware],
        client_max_size=64 * 1024 + settings.max_batch * 4 * (MAX_USER_ID_CHARS + 8),
    )
    app.router.add_get(ROUTE_ONE.replace("{user_id}", r"{user_id:[\s\S]+}"), api.get_one)
    app.router.add_post(ROUTE_BATCH, api.batch_get)
    add_status_routes(app, registry, ready, alive)
    return app


class _JsonErrorHandler(RequestHandler):
    """aiohttp's connection handler, answering requests its parser refuses (and its own
    500s) with this API's JSON error instead of plain text that quotes the input."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
        else:
            log.debug("refused a malformed request from %s: %r", request.remote, exc)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; closing the connection")
        code = _HTTP_CODES.get(status, "bad_request" if status < 500 else "internal")
        text = "malformed HTTP request" if status < 500 else "unexpected error; see the server log"
        response = error_response(status, code, text)
        response.force_close()
        return response


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)


async def start_site(
    app: web.Application, host: str, port: int, *, header_timeout: float = 10.0
) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port`` (0 = any free port); return the runner and the port.

    ``header_timeout`` is aiohttp's keep-alive timeout, which since 3.10 also runs from the
    moment a connection opens until a complete request head arrived: a slow client that
    trickles its headers is closed after it."""
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=header_timeout)
    await runner.setup()
    assert runner.server is not None
    runner.server.__class__ = _JsonErrorServer
    site = web.TCPSite(runner, host, port)
    await site.start()
    sockets = getattr(site._server, "sockets", None)
    bound = int(sockets[0].getsockname()[1]) if sockets else port
    return runner, bound
