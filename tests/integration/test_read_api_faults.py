"""The read API against hostile clients and a hung store, as a real ``lte serve`` process
over a real Redis (issue 17, item 5): answers stay JSON, bounded in time, and never quote
the input; a dead or hung store turns into fast 503s and a failing ``/readyz``."""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from lte_runtime.redis_server import RedisServer
from tests.integration.harness import LteProcess, http_status, wait_until

TOKEN = uuid.uuid4().hex
READ_TIMEOUT = 0.5
HEADER_TIMEOUT = 1.0


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test alone: it gets stopped."""
    with RedisServer(tmp_path / "redis") as running:
        yield running
        if running.pid is not None:
            os.kill(running.pid, signal.SIGCONT)


@pytest.fixture
def serve(own_redis: RedisServer, tmp_path: Path) -> Iterator[LteProcess]:
    process = LteProcess(
        [
            "serve",
            "--store",
            own_redis.url,
            "--basis-version",
            "b",
            "--encoder",
            "mean",
            "--read-timeout",
            str(READ_TIMEOUT),
            "--header-timeout",
            str(HEADER_TIMEOUT),
            "--body-timeout",
            str(HEADER_TIMEOUT),
        ],
        tmp_path,
        "serve",
        env={"LTE_API_TOKEN": TOKEN},
        port_flag="--port",
    ).start()
    try:
        yield process.wait_ready()
    finally:
        process.stop()


def raw_exchange(port: int, data: bytes, *, wait: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection; everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def status_and_json(reply: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = reply.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"application/json" in head.lower(), head
    return status, orjson.loads(body)


def get(port: int, path: str, token: str | None = TOKEN) -> tuple[int, dict[str, object], float]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 - loopback http
            return resp.status, orjson.loads(resp.read()), time.monotonic() - started
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read()), time.monotonic() - started


def test_a_non_utf8_authorization_header_is_a_json_401(serve: LteProcess) -> None:
    reply = raw_exchange(
        serve.port,
        b"GET /v1/lte/u HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\x80\r\n"
        b"Connection: close\r\n\r\n",
    )
    status, doc = status_and_json(reply)
    assert status == 401 and doc["error"]["code"] == "unauthorized"  # type: ignore[index]
    assert "unexpected error" not in serve.log() and "Traceback" not in serve.log()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /v1/lte/u HTTP/1.1\r\nHost: x\r\nBad Header Name <script>: 1\r\n\r\n",
        b"\x16\x03\x01 <script>alert(1)</script>\r\n\r\n",
        b"GET /v1/lte/u HTTP/1.1\r\nHost: x\r\nContent-Length: nope<script>\r\n\r\n",
    ],
)
def test_requests_the_http_parser_refuses_get_json_that_does_not_echo_them(
    serve: LteProcess, request_bytes: bytes
) -> None:
    reply = raw_exchange(serve.port, request_bytes)
    status, doc = status_and_json(reply)
    assert 400 <= status < 500 and doc["error"]["code"] == "bad_request"  # type: ignore[index]
    assert b"script" not in reply


def test_a_body_that_is_not_json_is_refused_without_quoting_it(serve: LteProcess) -> None:
    body = b'{"user_ids": [<script>'
    reply = raw_exchange(
        serve.port,
        b"POST /v1/lte:batchGet HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + TOKEN.encode()
        + b"\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body,
    )
    status, doc = status_and_json(reply)
    assert status == 400 and "body: not JSON" in str(doc)
    assert b"script" not in reply


def test_slow_clients_are_cut_off(serve: LteProcess) -> None:
    # headers that never finish: the server closes the connection after --header-timeout
    started = time.monotonic()
    reply = raw_exchange(
        serve.port, b"GET /v1/lte/u HTTP/1.1\r\nHost: x\r\n", wait=10 * HEADER_TIMEOUT
    )
    assert reply == b"" and time.monotonic() - started < 8 * HEADER_TIMEOUT
    # a body that never arrives: 408 after --body-timeout
    reply = raw_exchange(
        serve.port,
        b"POST /v1/lte:batchGet HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + TOKEN.encode()
        + b"\r\nContent-Length: 100\r\n\r\n{",
        wait=10 * HEADER_TIMEOUT,
    )
    status, doc = status_and_json(reply)
    assert status == 408 and doc["error"]["code"] == "request_timeout"  # type: ignore[index]


def test_a_client_that_hangs_up_is_not_logged_as_a_server_error(serve: LteProcess) -> None:
    with socket.create_connection(("127.0.0.1", serve.port)) as sock:
        sock.sendall(
            b"POST /v1/lte:batchGet HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + TOKEN.encode()
            + b"\r\nContent-Length: 100\r\n\r\n{"
        )
    wait_until(
        lambda: serve.metric("lte_api_request_duration_seconds_count", {"status": "499"}) >= 1,
        timeout=10,
        what="the hang-up counted as 499",
    )
    assert "unexpected error" not in serve.log() and "Traceback" not in serve.log()


def test_a_hung_store_answers_503_fast_and_readiness_follows(
    serve: LteProcess, own_redis: RedisServer
) -> None:
    status, _, _ = get(serve.port, "/v1/lte/nobody")
    assert status == 404
    assert own_redis.pid is not None
    os.kill(own_redis.pid, signal.SIGSTOP)
    try:
        status, doc, took = get(serve.port, "/v1/lte/nobody")
        assert status == 503 and doc["error"]["code"] == "store_unavailable"  # type: ignore[index]
        assert took < READ_TIMEOUT + 2.0, took
        wait_until(
            lambda: http_status(serve.port, "/readyz") == 503,
            timeout=READ_TIMEOUT + 5.0,
            what="/readyz to fail while Redis hangs",
        )
        assert http_status(serve.port, "/healthz") == 200  # the process itself is fine
    finally:
        os.kill(own_redis.pid, signal.SIGCONT)
    wait_until(
        lambda: http_status(serve.port, "/readyz") == 200, timeout=15, what="/readyz to recover"
    )
    assert get(serve.port, "/v1/lte/nobody")[0] == 404
