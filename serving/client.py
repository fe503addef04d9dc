"""A Python client of the read API: LTEs as numpy vectors, for model servers.

    from serving.client import LTEClient

    with LTEClient("http://lte-api:8080", token=os.environ["LTE_API_TOKEN"]) as lte:
        one = lte.get("user-42")                  # LTE | None (None: no LTE for that user)
        many = lte.get_many(["u1", "u2", "u3"])   # list[LTE | None], aligned with the ids
        vector = one.vector                       # float32 array (None if the window emptied)

``AsyncLTEClient`` has the same methods as coroutines (aiohttp). Both:

* **Time out** every attempt after ``timeout`` seconds, and **retry** only what is safe to
  repeat — every call here is a read — on a connection error, a timeout or a 503 (the
  store is down), ``retries`` times with exponential backoff (``backoff`` doubling up to
  ``max_backoff``). Nothing else is retried: a 4xx will not change by asking again.
* Raise one exception per failure kind, all under :class:`LTEClientError` (an
  :class:`~lte_core.errors.LTEError`): :class:`BadRequestError` (400),
  :class:`UnauthorizedError` (401), :class:`NoVersionError` (404: nothing was ever written
  for the requested basis_version/encoder), :class:`ServiceUnavailableError` (503 after the
  retries), :class:`ServerError` (other 5xx), :class:`LTEConnectionError` (no answer after
  the retries). An HTTP error carries the server's JSON error (``code``, ``message``).
* Negotiate the body format: ``Accept`` lists the media types of the registered
  :data:`DECODERS` — the binary form (:mod:`serving.binary_body`: Avro records, vectors as
  raw float32) first, JSON at ``q=0.9`` — and the response is decoded by its
  ``Content-Type``, so a server that only speaks JSON still works.
* Pin the pair across a ``get_many``: ids beyond ``batch_size`` go in several requests, and
  the later ones name the ``(basis_version, encoder)`` the first one resolved, so one call
  never mixes two bases.

Vectors arrive bit-identical to what the worker computed (raw float32 in the binary form;
JSON numbers written from float32 and parsed back into float32 otherwise).
"""

from __future__ import annotations

import asyncio
import http.client
import threading
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import quote, urlencode, urlsplit

import numpy as np
import numpy.typing as npt
import orjson

from lte_core.errors import LTEError, UpdateFormatError
from lte_core.update import LTEUpdate
from lte_core.update_avro import decode as decode_avro
from serving.binary_body import (
    BASIS_HEADER,
    ENCODER_HEADER,
    OCTET_STREAM,
    STORED_AT_HEADER,
    text_of_header,
    unframe_batch,
)

F32Array = npt.NDArray[np.float32]
JSON = "application/json"
ROUTE_ONE = "/v1/lte/"
ROUTE_BATCH = "/v1/lte:batchGet"
NO_ENTRY_MESSAGE = "no LTE for user"  # how serving.read_api words a 404 for a missing user


@dataclass(frozen=True, slots=True)
class LTE:
    """One user's LTE as the read API serves it. ``vector``/``coefficients`` are ``None``
    when the window emptied (``n_events == 0``); times are Unix seconds."""

    user_id: str
    basis_version: str
    encoder: str
    vector: F32Array | None
    coefficients: F32Array | None
    n_events: int
    weight_sum: float
    as_of: float
    window_start: float
    window_end: float
    due_at: float
    produced_at: float
    stored_at: float


@dataclass(frozen=True, slots=True)
class Batch:
    """A decoded batch answer: the pair it was read under, and one entry per id."""

    basis_version: str
    encoder: str
    results: list[LTE | None]


class LTEClientError(LTEError):
    """Root of the client's errors."""


class LTEConnectionError(LTEClientError):
    """No answer (refused, reset, timed out) after every retry; check the URL and that
    ``lte serve`` runs."""


class LTEHTTPError(LTEClientError):
    """The server answered an error; ``code`` and ``message`` are its JSON error."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class BadRequestError(LTEHTTPError):
    """400: the message names the parameter (a user id too long, a batch too large …)."""


class UnauthorizedError(LTEHTTPError):
    """401: give the server's ``LTE_API_TOKEN`` as ``token``."""


class NoVersionError(LTEHTTPError):
    """404 ``no_version``: no LTE was ever written under the requested basis_version/encoder."""


class ServiceUnavailableError(LTEHTTPError):
    """503 after every retry: the online store behind the API is down."""


class ServerError(LTEHTTPError):
    """Another 5xx: a server bug or corrupt entry; see the server's log."""


class UnsupportedResponseError(LTEClientError):
    """The server answered a ``Content-Type`` no registered decoder reads."""


class MalformedResponseError(LTEClientError):
    """A 200 whose body does not decode as its ``Content-Type`` says (a proxy rewrote it,
    or the URL is not the read API)."""


class BodyDecoder(Protocol):
    """Turns a 200 body into LTEs; one per media type in :data:`DECODERS`. ``headers`` has
    the response's headers under lower-case names."""

    def one(self, body: bytes, headers: Mapping[str, str]) -> LTE: ...

    def many(self, body: bytes, headers: Mapping[str, str]) -> Batch: ...


class JsonDecoder:
    def one(self, body: bytes, headers: Mapping[str, str]) -> LTE:
        return lte_from_doc(orjson.loads(body))

    def many(self, body: bytes, headers: Mapping[str, str]) -> Batch:
        doc = orjson.loads(body)
        return Batch(
            doc["basis_version"],
            doc["encoder"],
            [None if entry is None else lte_from_doc(entry) for entry in doc["results"]],
        )


def lte_from_doc(doc: Mapping[str, Any]) -> LTE:
    """An :class:`LTE` from the read API's JSON object for one user."""
    return LTE(
        user_id=doc["user_id"],
        basis_version=doc["basis_version"],
        encoder=doc["encoder"],
        vector=_f32(doc["vector"]),
        coefficients=_f32(doc["coefficients"]),
        n_events=int(doc["n_events"]),
        weight_sum=float(doc["weight_sum"]),
        as_of=float(doc["as_of"]),
        window_start=float(doc["window_start"]),
        window_end=float(doc["window_end"]),
        due_at=float(doc["due_at"]),
        produced_at=float(doc["produced_at"]),
        stored_at=float(doc["stored_at"]),
    )


def _f32(values: Sequence[float] | None) -> F32Array | None:
    return None if values is None else np.asarray(values, dtype=np.float32)


class BinaryDecoder:
    """The read API's binary form (:mod:`serving.binary_body`)."""

    def one(self, body: bytes, headers: Mapping[str, str]) -> LTE:
        return lte_from_update(decode_avro(body), float(headers[STORED_AT_HEADER.lower()]))

    def many(self, body: bytes, headers: Mapping[str, str]) -> Batch:
        return Batch(
            text_of_header(headers[BASIS_HEADER.lower()]),
            text_of_header(headers[ENCODER_HEADER.lower()]),
            [
                None if frame is None else lte_from_update(decode_avro(frame[0]), frame[1])
                for frame in unframe_batch(body)
            ],
        )


def lte_from_update(update: LTEUpdate, stored_at: float) -> LTE:
    return LTE(
        user_id=update.user_id,
        basis_version=update.basis_version,
        encoder=update.encoder,
        vector=update.vector,
        coefficients=update.coefficients,
        n_events=update.n_events,
        weight_sum=update.weight_sum,
        as_of=update.as_of,
        window_start=update.window_start,
        window_end=update.window_end,
        due_at=update.due_at,
        produced_at=update.produced_at,
        stored_at=stored_at,
    )


# Media type -> decoder, most preferred first; the JSON decoder stays as the fallback.
DECODERS: dict[str, BodyDecoder] = {OCTET_STREAM: BinaryDecoder(), JSON: JsonDecoder()}


def accept_header(decoders: Mapping[str, BodyDecoder]) -> str:
    """The registered media types, JSON last at ``q=0.9`` when something else is preferred:
    ``application/octet-stream, application/json;q=0.9`` once a binary decoder exists."""
    others = [media for media in decoders if media != JSON]
    if not others:
        return JSON
    return ", ".join([*others, f"{JSON};q=0.9"] if JSON in decoders else others)


@dataclass(frozen=True, slots=True)
class _Call:
    """One API call: what to send and how to read a 200."""

    method: str
    path: str
    body: bytes | None
    batch: bool


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    content_type: str
    body: bytes
    #: lower-case names
    headers: Mapping[str, str] = field(default_factory=dict)


_RETRY_STATUSES = frozenset({503})
_HTTP_ERRORS: dict[int, type[LTEHTTPError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    503: ServiceUnavailableError,
}


class _Core:
    """What both clients share: the calls, the retry schedule and the decoding. Only the
    transport (http.client or aiohttp) differs."""

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        timeout: float,
        retries: int,
        backoff: float,
        max_backoff: float,
        batch_size: int,
        decoders: Mapping[str, BodyDecoder] | None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise LTEClientError(f"url: expected http(s)://host[:port], got {url!r}")
        if timeout <= 0 or retries < 0 or backoff < 0 or batch_size < 1:
            raise LTEClientError("timeout and batch_size must be positive, retries >= 0")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.batch_size = batch_size
        self.decoders = dict(decoders if decoders is not None else DECODERS)
        self.headers = {"Accept": accept_header(self.decoders), "User-Agent": "lte-client"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"

    def __repr__(self) -> str:  # never the token
        return f"<LTE API {self.scheme}://{self.host}:{self.port}{self.prefix}>"

    def delays(self) -> Iterator[float]:
        """Sleep before each retry: ``backoff``, doubling, capped."""
        delay = self.backoff
        for _ in range(self.retries):
            yield delay
            delay = min(delay * 2, self.max_backoff)

    def one(self, user_id: str, basis_version: str | None, encoder: str | None) -> _Call:
        if not user_id:
            raise LTEClientError("user_id: must not be empty")
        query = {k: v for k, v in (("basis_version", basis_version), ("encoder", encoder)) if v}
        path = self.prefix + ROUTE_ONE + quote(user_id, safe="")
        return _Call("GET", f"{path}?{urlencode(query)}" if query else path, None, batch=False)

    def many(
        self, user_ids: Sequence[str], basis_version: str | None, encoder: str | None
    ) -> Generator[_Call, Batch, list[LTE | None]]:
        """The calls of a ``get_many``, one per ``batch_size`` ids: each is sent its answer,
        and the ids after the first chunk name the pair the first answer resolved."""
        parts: list[tuple[int, Batch]] = []
        for start in range(0, len(user_ids), self.batch_size):
            doc: dict[str, Any] = {"user_ids": list(user_ids[start : start + self.batch_size])}
            if basis_version:
                doc["basis_version"] = basis_version
            if encoder:
                doc["encoder"] = encoder
            batch = yield _Call("POST", self.prefix + ROUTE_BATCH, orjson.dumps(doc), batch=True)
            basis_version, encoder = batch.basis_version, batch.encoder
            parts.append((start, batch))
        out: list[LTE | None] = [None] * len(user_ids)
        for start, batch in parts:
            out[start : start + len(batch.results)] = batch.results
        return out

    def retryable(self, answer: _Answer) -> bool:
        return answer.status in _RETRY_STATUSES

    def result(self, call: _Call, answer: _Answer) -> LTE | Batch | None:
        if answer.status == 200:
            media = answer.content_type.split(";")[0].strip().lower()
            decoder = self.decoders.get(media)
            if decoder is None:
                raise UnsupportedResponseError(
                    f"the server answered {media or 'no Content-Type'}; this client reads "
                    f"{', '.join(self.decoders)}"
                )
            try:
                if call.batch:
                    return decoder.many(answer.body, answer.headers)
                return decoder.one(answer.body, answer.headers)
            except (UpdateFormatError, KeyError, ValueError) as exc:
                raise MalformedResponseError(
                    f"the server's {media} body could not be read ({type(exc).__name__}: "
                    f"{exc}); is {self!r} the read API?"
                ) from exc
        code, message = _error_of(answer)
        if answer.status == 404 and code == "not_found" and not call.batch:
            if message.startswith(NO_ENTRY_MESSAGE):
                return None
            # A 404 of the router (a wrong base URL or proxy path) must not read as "no LTE".
            raise LTEHTTPError(404, code, f"{message} (is {self!r} the read API's base URL?)")
        if answer.status == 404 and code == "no_version":
            raise NoVersionError(404, code, message)
        kind = _HTTP_ERRORS.get(answer.status)
        if kind is None:
            kind = ServerError if answer.status >= 500 else LTEHTTPError
        raise kind(answer.status, code, message)

    def unreachable(self, exc: BaseException) -> LTEConnectionError:
        return LTEConnectionError(
            f"{self!r} did not answer after {self.retries + 1} attempts "
            f"({type(exc).__name__}: {exc}); check the URL and that `lte serve` runs"
        )


def _error_of(answer: _Answer) -> tuple[str, str]:
    try:
        error = orjson.loads(answer.body)["error"]
        return str(error["code"]), str(error["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return "http_error", answer.body[:200].decode(errors="replace")


def _batch(found: LTE | Batch | None) -> Batch:
    assert isinstance(found, Batch), found
    return found


class _Client:
    """The settings both clients take (see the module docstring for what each does)."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 2.0,
        retries: int = 3,
        backoff: float = 0.05,
        max_backoff: float = 1.0,
        batch_size: int = 1000,
        decoders: Mapping[str, BodyDecoder] | None = None,
    ) -> None:
        self._core = _Core(
            url,
            token,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            batch_size=batch_size,
            decoders=decoders,
        )
        self._start()

    def _start(self) -> None:
        """The transport's own state (nothing is connected before the first call)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._core!r})"


class LTEClient(_Client):
    """Blocking client over one keep-alive connection (``http.client``); safe to share
    between threads (calls are serialised), or use one per thread for parallel calls."""

    def _start(self) -> None:
        self._connection: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def get(
        self, user_id: str, *, basis_version: str | None = None, encoder: str | None = None
    ) -> LTE | None:
        """The LTE of ``user_id`` (``None`` if the store has none)."""
        found = self._call(self._core.one(user_id, basis_version, encoder))
        assert found is None or isinstance(found, LTE)
        return found

    def get_many(
        self,
        user_ids: Sequence[str],
        *,
        basis_version: str | None = None,
        encoder: str | None = None,
    ) -> list[LTE | None]:
        """The LTEs of ``user_ids``, aligned with them (``None`` where there is none)."""
        plan = self._core.many(user_ids, basis_version, encoder)
        try:
            call = next(plan)
            while True:
                call = plan.send(_batch(self._call(call)))
        except StopIteration as done:
            return list(done.value)

    def _call(self, call: _Call) -> LTE | Batch | None:
        delays = self._core.delays()
        while True:
            try:
                answer = self._send(call)
            except (OSError, http.client.HTTPException) as exc:
                self._drop_connection()
                delay = next(delays, None)
                if delay is None:
                    raise self._core.unreachable(exc) from exc
                time.sleep(delay)
                continue
            if self._core.retryable(answer):
                delay = next(delays, None)
                if delay is not None:
                    time.sleep(delay)
                    continue
            return self._core.result(call, answer)

    def _send(self, call: _Call) -> _Answer:
        with self._lock:
            if self._connection is None:
                kind = (
                    http.client.HTTPSConnection
                    if self._core.scheme == "https"
                    else http.client.HTTPConnection
                )
                self._connection = kind(
                    self._core.host, self._core.port, timeout=self._core.timeout
                )
            headers = dict(self._core.headers)
            if call.body is not None:
                headers["Content-Type"] = JSON
            self._connection.request(call.method, call.path, body=call.body, headers=headers)
            response = self._connection.getresponse()
            body = response.read()
            headers = {name.lower(): value for name, value in response.getheaders()}
            return _Answer(response.status, headers.get("content-type", ""), body, headers)

    def _drop_connection(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def close(self) -> None:
        self._drop_connection()

    def __enter__(self) -> LTEClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncLTEClient(_Client):
    """The same calls as :class:`LTEClient`, as coroutines over an aiohttp session (created
    on first use, in the running loop; close with ``await client.close()`` or
    ``async with``)."""

    def _start(self) -> None:
        self._session: Any = None

    async def get(
        self, user_id: str, *, basis_version: str | None = None, encoder: str | None = None
    ) -> LTE | None:
        """The LTE of ``user_id`` (``None`` if the store has none)."""
        found = await self._call(self._core.one(user_id, basis_version, encoder))
        assert found is None or isinstance(found, LTE)
        return found

    async def get_many(
        self,
        user_ids: Sequence[str],
        *,
        basis_version: str | None = None,
        encoder: str | None = None,
    ) -> list[LTE | None]:
        """The LTEs of ``user_ids``, aligned with them (``None`` where there is none)."""
        plan = self._core.many(user_ids, basis_version, encoder)
        try:
            call = next(plan)
            while True:
                call = plan.send(_batch(await self._call(call)))
        except StopIteration as done:
            return list(done.value)

    async def _call(self, call: _Call) -> LTE | Batch | None:
        import aiohttp  # noqa: PLC0415 - the sync client needs no aiohttp

        delays = self._core.delays()
        while True:
            try:
                answer = await self._send(call)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                delay = next(delays, None)
                if delay is None:
                    raise self._core.unreachable(exc) from exc
                await asyncio.sleep(delay)
                continue
            if self._core.retryable(answer):
                delay = next(delays, None)
                if delay is not None:
                    await asyncio.sleep(delay)
                    continue
            return self._core.result(call, answer)

    async def _send(self, call: _Call) -> _Answer:
        import aiohttp  # noqa: PLC0415

        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._core.timeout),
                headers=self._core.headers,
            )
        url = f"{self._core.scheme}://{self._core.host}:{self._core.port}{call.path}"
        headers = {"Content-Type": JSON} if call.body is not None else None
        async with self._session.request(
            call.method, url, data=call.body, headers=headers
        ) as response:
            body = await response.read()
            headers = {name.lower(): value for name, value in response.headers.items()}
            return _Answer(response.status, headers.get("content-type", ""), body, headers)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> AsyncLTEClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


__all__ = [
    "DECODERS",
    "LTE",
    "AsyncLTEClient",
    "BadRequestError",
    "Batch",
    "BinaryDecoder",
    "BodyDecoder",
    "JsonDecoder",
    "LTEClient",
    "LTEClientError",
    "LTEConnectionError",
    "LTEHTTPError",
    "MalformedResponseError",
    "NoVersionError",
    "ServerError",
    "ServiceUnavailableError",
    "UnauthorizedError",
    "UnsupportedResponseError",
    "accept_header",
    "lte_from_doc",
    "lte_from_update",
]
