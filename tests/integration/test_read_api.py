"""The read API (serving/read_api.py) over real stores, through real HTTP.

Most tests run the app in-process on its own loop (fast, and its registry is inspectable);
the last ones run ``lte serve`` as a process to check flags, the token variable and a
RocksDB follower reading what another process writes."""

from __future__ import annotations

import asyncio
import io
import itertools
import os
import struct
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import fastavro
import numpy as np
import orjson
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from prometheus_client import CollectorRegistry
from yarl import URL

from lte_core import update_avro
from lte_core.update import LTEUpdate
from lte_core.update_columns import UpdateColumns
from lte_runtime.redis_server import RedisServer
from serving.read_api import build_app, negotiate, start_site
from serving.settings import ApiSettings
from serving.store_url import RedisLocation
from tests.integration.harness import ROOT, LteProcess, http_status, unique, wait_until
from tests.integration.store_backends import (
    BACKENDS,
    SyncStore,
    location,
    make_update,
    same_update,
    sync_store,
    update_from_json,
)

Reply = tuple[int, Any, dict[str, str]]
TOKEN = uuid.uuid4().hex


class Api:
    """An in-process API server and a client session on the store's loop."""

    def __init__(self, store: SyncStore, settings: ApiSettings) -> None:
        self.store = store
        self.registry = CollectorRegistry()
        app = build_app(store.store, settings, self.registry, lambda: (True, "test"))
        self.runner, self.port = store.run(start_site(app, "127.0.0.1", 0))
        self.session = store.run(_new_session())

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        raw: bytes | None = None,
        token: str | None = None,
        accept: str | None = None,
    ) -> Reply:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        if accept is not None:
            headers["Accept"] = accept
        data = raw if raw is not None else (None if body is None else orjson.dumps(body))
        url = URL(f"http://127.0.0.1:{self.port}{path}", encoded=True)

        async def send() -> Reply:
            async with self.session.request(method, url, data=data, headers=headers) as resp:
                text = await resp.read()
                doc = orjson.loads(text) if resp.content_type == "application/json" else text
                return resp.status, doc, dict(resp.headers)

        return self.store.run(send())

    def get(self, user: str, query: str = "", token: str | None = None) -> Reply:
        return self.call("GET", f"/v1/lte/{quote(user, safe='')}{query}", token=token)

    def batch(self, body: Any, token: str | None = None) -> Reply:
        return self.call("POST", "/v1/lte:batchGet", body=body, token=token)

    def close(self) -> None:
        self.store.run(self.session.close())
        self.store.run(self.runner.cleanup())


async def _new_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession()


_REDIS_DATABASES = itertools.cycle(range(1, 16))


@pytest.fixture(params=BACKENDS)
def store(
    request: pytest.FixtureRequest, redis_server: RedisServer, tmp_path: Path
) -> Iterator[SyncStore]:
    """A store of its own per test: the registry of written pairs is per store, and the
    defaults test needs to know every pair in it. Redis gets an emptied database."""
    where = location(request.param, redis_server, tmp_path)
    if isinstance(where, RedisLocation):
        where = RedisLocation(where.host, where.port, next(_REDIS_DATABASES))
        with redis.Redis(host=where.host, port=where.port, db=where.db) as raw:
            raw.flushdb()
    with sync_store(where) as opened:
        yield opened


@pytest.fixture
def make_api(store: SyncStore) -> Iterator[Callable[..., Api]]:
    started: list[Api] = []

    def make(**options: Any) -> Api:
        api = Api(store, ApiSettings(**options))
        started.append(api)
        return api

    yield make
    for api in started:
        api.close()


f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
user_ids = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=256)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=40)
@given(
    users=st.lists(user_ids, min_size=1, max_size=5, unique=True),
    vector=st.none() | arrays(np.float32, st.integers(1, 64), elements=f32),
    as_of=st.floats(-1e12, 1e12),
)
def test_what_is_written_is_what_is_read(
    make_api: Callable[..., Api],
    store: SyncStore,
    users: list[str],
    vector: np.ndarray | None,
    as_of: float,
) -> None:
    basis = unique("b")
    api = make_api(basis_version=basis, encoder="mean")
    written = [
        make_update(
            u, as_of, as_of - 1, None if vector is None else np.roll(vector, i), basis_version=basis
        )
        for i, u in enumerate(users)
    ]
    store.write(written, stored_at=as_of + 2)
    for update in written:
        # yarl (client) and aiohttp (server) both resolve dot segments in paths, so "." and
        # ".." are reachable through batchGet only (docs/serving.md).
        if update.user_id.strip("/") in {".", ".."} or "/./" in update.user_id:
            continue
        status, doc, _ = api.get(update.user_id)
        assert status == 200, (update.user_id, doc)
        assert same_update(update_from_json(doc), update) and doc["stored_at"] == as_of + 2
    status, doc, _ = api.batch({"user_ids": [*users, "nobody-" + basis]})
    assert status == 200 and doc["basis_version"] == basis and doc["results"][-1] is None
    for update, got in zip(written, doc["results"], strict=False):
        assert same_update(update_from_json(got), update)


def test_get_answers_the_fields_of_the_update(
    make_api: Callable[..., Api], store: SyncStore
) -> None:
    basis = unique("b")
    api = make_api()
    update = make_update("alice", 100.0, 99.0, [0.5, -1.25, 3.0], basis_version=basis, k=2)
    store.write([update], stored_at=101.0)
    status, doc, headers = api.get("alice", f"?basis_version={basis}&encoder=mean")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert doc == {
        "user_id": "alice",
        "basis_version": basis,
        "encoder": "mean",
        "as_of": 100.0,
        "window_start": 100.0 - 86400,
        "window_end": 100.0 - 3600,
        "n_events": update.n_events,
        "weight_sum": 2.5,
        "coefficients": [0.5, -1.25],
        "vector": [0.5, -1.25, 3.0],
        "due_at": 99.0,
        "produced_at": 99.25,
        "stored_at": 101.0,
    }
    store.write([make_update("alice", 200.0, 199.0, None, basis_version=basis)])
    status, doc, _ = api.get("alice", f"?basis_version={basis}&encoder=mean")
    assert status == 200 and doc["n_events"] == 0 and doc["as_of"] == 200.0
    assert doc["vector"] is None and doc["coefficients"] is None
    latency = api.registry.get_sample_value(
        "lte_api_request_duration_seconds_count", {"route": "/v1/lte/{user_id}", "status": "200"}
    )
    assert latency == 2


def test_errors_are_json_and_name_the_problem(
    make_api: Callable[..., Api], store: SyncStore
) -> None:
    basis = unique("b")
    api = make_api(basis_version=basis, encoder="mean", max_batch=3)
    store.write([make_update("bob", 1.0, 1.0, [1.0], basis_version=basis)])
    cases: list[tuple[Reply, int, str]] = [
        (api.get("nobody"), 404, "no LTE for user 'nobody'"),
        (api.get("bob", "?basis_version=other"), 404, "basis_version=other"),
        (api.get("bob", "?encodr=mean&x=1"), 400, "unknown query parameter(s) encodr, x"),
        (api.get("bob", "?encoder=a&encoder=b"), 400, "encoder: given 2 times"),
        (api.get("bob", "?encoder="), 400, "encoder: expected a string of 1-256"),
        (api.get("x" * 257), 400, "user_id: expected a string of 1-256"),
        (api.call("GET", "/v1/nothing-here"), 404, "Not Found"),
        (api.call("GET", "/v1/lte:batchGet"), 405, "Method Not Allowed"),
        (api.batch({"user_ids": ["a", "b", "c", "d"]}), 400, "user_ids: expected a list of 1-3"),
        (api.batch({"user_ids": []}), 400, "user_ids: expected a list of 1-3"),
        (api.batch({"user_ids": ["a", 7]}), 400, "user_ids[1]: expected a string"),
        (api.batch({"user_ids": ["a"], "limit": 2}), 400, "unknown field(s) limit"),
        (api.batch({"user_ids": ["a"], "encoder": ""}), 400, "encoder: expected a string"),
        (api.batch([1, 2]), 400, "body: expected a JSON object"),
        (api.call("POST", "/v1/lte:batchGet", raw=b"{nope"), 400, "body: not JSON"),
        (api.call("POST", "/v1/lte:batchGet?x=1", body={}), 400, "unknown query parameter(s) x"),
    ]
    for (status, doc, _), want_status, message in cases:
        assert status == want_status, doc
        assert message in doc["error"]["message"], doc
        assert doc["error"]["code"]
    too_big = api.call("POST", "/v1/lte:batchGet", raw=b"[" + b" " * (1 << 21) + b"]")
    assert too_big[0] == 413 and too_big[1]["error"]["code"] == "payload_too_large"
    assert api.registry.get_sample_value(
        "lte_api_request_duration_seconds_count", {"route": "unmatched", "status": "404"}
    )


SCHEMA = fastavro.parse_schema(orjson.loads(update_avro.SCHEMA_TEXT))


def _from_avro(record: bytes) -> LTEUpdate:
    """A binary record read by fastavro (an independent Avro implementation), as an update."""
    assert record[:10] == update_avro.PREFIX
    body = io.BytesIO(record[10:])
    doc = fastavro.schemaless_reader(body, SCHEMA, None)
    assert isinstance(doc, dict) and body.read() == b""
    vector = None if doc["vector"] is None else np.frombuffer(doc["vector"], "<f4")
    coefficients = (
        vector if doc["coefficients"] is None else np.frombuffer(doc["coefficients"], "<f4")
    )
    version = doc["version"]
    return LTEUpdate(
        **{k: doc[k] for k in ("user_id", "basis_version", "encoder", "as_of", "window_start")},
        **{k: doc[k] for k in ("window_end", "n_events", "weight_sum", "due_at", "produced_at")},
        vector=None if vector is None else vector.astype(np.float32),
        coefficients=None if coefficients is None else coefficients.astype(np.float32),
        version=None if version is None else (version["last_offset"], version["end_bucket"]),
    )


def _frames(body: bytes) -> list[tuple[bytes, float] | None]:
    """The batchGet framing of docs/serving.md, parsed here independently of the server."""
    out: list[tuple[bytes, float] | None] = []
    pos = 0
    while pos < len(body):
        (size,) = struct.unpack_from("<I", body, pos)
        pos += 4
        if size == 0:
            out.append(None)
            continue
        (stored_at,) = struct.unpack_from("<d", body, pos)
        out.append((body[pos + 8 : pos + 8 + size], stored_at))
        pos += 8 + size
    return out


def test_binary_and_json_answers_are_the_same_lte(
    make_api: Callable[..., Api], store: SyncStore
) -> None:
    """Every written LTE (d=384, K<d, K=d, versioned or not, emptied) read back through JSON
    and through both binary media types equals the update written, float32 bit for bit."""
    basis = unique("b")
    api = make_api(basis_version=basis, encoder="mean")
    rng = np.random.default_rng(11)
    written = [
        make_update(
            f"user-{i}",
            1.7e9 + i,
            1.7e9 + i - 0.5,
            rng.standard_normal(384).astype(np.float32) * 10.0 ** rng.integers(-30, 30),
            basis_version=basis,
            k=[None, 16][i % 2],
            version=None if i == 3 else (1000 + i, 7),
        )
        for i in range(12)
    ]
    written.append(make_update("emptied", 1.7e9, 1.7e9, None, basis_version=basis))
    store.write(written, stored_at=1.8e9 + 0.125)
    for update in written:
        status, doc, headers = api.get(update.user_id)
        assert status == 200 and headers["Content-Type"] == "application/json"
        assert same_update(update_from_json(doc), update)
        for media in ("application/octet-stream", "application/vnd.lte.update+avro"):
            status, body, headers = api.call(
                "GET", f"/v1/lte/{update.user_id}", accept=f"{media}, application/json;q=0.9"
            )
            assert status == 200 and headers["Content-Type"] == media
            assert headers["Vary"] == "Accept"
            assert float(headers["LTE-Stored-At"]) == doc["stored_at"] == 1.8e9 + 0.125
            assert same_update(_from_avro(body), update), update.user_id
    ids = [u.user_id for u in written] + ["nobody", written[0].user_id]
    status, doc, _ = api.batch({"user_ids": ids})
    assert status == 200
    status, body, headers = api.call(
        "POST", "/v1/lte:batchGet", body={"user_ids": ids}, accept="application/octet-stream"
    )
    assert status == 200 and headers["LTE-Basis-Version"] == quote(basis, safe="")
    frames = _frames(body)
    assert len(frames) == len(ids) and frames[-2] is None and doc["results"][-2] is None
    wanted = [*written, None, written[0]]
    for want, frame, as_json in zip(wanted, frames, doc["results"], strict=True):
        if want is None:
            continue
        assert frame is not None and frame[1] == as_json["stored_at"]
        assert same_update(_from_avro(frame[0]), want)
        assert same_update(update_from_json(as_json), want)


def test_errors_stay_json_when_binary_is_asked_for(
    make_api: Callable[..., Api], store: SyncStore
) -> None:
    api = make_api(basis_version=unique("b"), encoder="mean")
    binary = "application/octet-stream"
    for status, doc, headers in (
        api.call("GET", "/v1/lte/nobody", accept=binary),
        api.call("POST", "/v1/lte:batchGet", body={"user_ids": []}, accept=binary),
        api.call("GET", "/v1/lte/x?bad=1", accept=binary),
    ):
        assert status in (400, 404) and headers["Content-Type"] == "application/json"
        assert doc["error"]["code"] and doc["error"]["message"]


@pytest.mark.parametrize(
    ("accept", "media"),
    [
        ("", "application/json"),
        ("*/*", "application/json"),
        ("application/json", "application/json"),
        ("application/octet-stream", "application/octet-stream"),
        ("application/octet-stream, application/json;q=0.9", "application/octet-stream"),
        ("application/json, application/octet-stream;q=0.5", "application/json"),
        ("application/*;q=0.2, application/octet-stream;q=0.1", "application/json"),
        ("application/vnd.lte.update+avro;q=1.0, */*;q=0.1", "application/vnd.lte.update+avro"),
        ("application/octet-stream;q=0, */*", "application/json"),
        ("text/html", "application/json"),
        ("APPLICATION/OCTET-STREAM; q=0.8, application/json; q=0.7", "application/octet-stream"),
    ],
)
def test_negotiation_follows_accept(accept: str, media: str) -> None:
    assert negotiate(accept) == media


def test_batch_get_answers_in_request_order(make_api: Callable[..., Api], store: SyncStore) -> None:
    basis = unique("b")
    api = make_api()
    store.write(
        [make_update(u, 5.0, 5.0, [float(i)], basis_version=basis) for i, u in enumerate("abc")]
    )
    status, doc, _ = api.batch(
        {"user_ids": ["c", "zz", "a", "c"], "basis_version": basis, "encoder": "mean"}
    )
    assert status == 200
    assert [None if r is None else r["user_id"] for r in doc["results"]] == ["c", None, "a", "c"]
    assert doc["results"][0]["vector"] == [2.0]


def test_defaults_follow_the_most_recently_written_pair(
    make_api: Callable[..., Api], store: SyncStore
) -> None:
    old, new = unique("b"), unique("b")
    store.write([make_update("u", 1.0, 1.0, [1.0], basis_version=old)], stored_at=4e9)
    store.write(
        [make_update("u", 2.0, 2.0, [2.0], basis_version=new, encoder="recency:30d")],
        stored_at=4e9 + 1,
    )
    store.write([make_update("u", 3.0, 3.0, [3.0], basis_version=new)], stored_at=4e9 + 2)
    api = make_api()
    assert api.get("u")[1]["as_of"] == 3.0  # newest pair: (new, mean)
    assert api.get("u", "?encoder=recency%3A30d")[1]["as_of"] == 2.0
    assert api.get("u", f"?basis_version={old}")[1]["as_of"] == 1.0
    status, doc, _ = api.get("u", "?encoder=never-written")
    assert status == 404 and doc["error"]["code"] == "no_version"
    pinned = make_api(basis_version=old, encoder="mean")
    assert pinned.get("u")[1]["as_of"] == 1.0


def test_a_token_guards_every_data_route_and_nothing_else(
    make_api: Callable[..., Api], store: SyncStore
) -> None:
    basis = unique("b")
    store.write([make_update("u", 1.0, 1.0, [1.0], basis_version=basis)])
    api = make_api(basis_version=basis, encoder="mean", token=TOKEN)
    body = {"user_ids": ["u"]}
    wrong = TOKEN[::-1]
    for status, doc, headers in (api.get("u"), api.batch(body), api.get("u", token=wrong)):
        assert status == 401 and doc["error"]["code"] == "unauthorized"
        assert headers["WWW-Authenticate"].startswith("Bearer")
    assert api.get("nobody")[0] == 401  # no peeking at which users exist
    assert api.get("u", token=TOKEN)[0] == 200
    assert api.batch(body, token=TOKEN)[0] == 200
    for path in ("/healthz", "/readyz", "/metrics"):
        assert api.call("GET", path)[0] == 200
    open_api = make_api(basis_version=basis, encoder="mean")
    assert open_api.get("u")[0] == 200 and open_api.get("u", token=wrong)[0] == 200


def test_a_store_outage_is_a_503_and_reads_resume_after(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    try:
        with sync_store(RedisLocation(server.host, server.port, 0)) as store:
            store.write([make_update("u", 1.0, 1.0, [1.0], basis_version="b")])
            api = Api(store, ApiSettings(basis_version="b", encoder="mean"))
            try:
                server.kill()
                status, doc, _ = api.get("u")
                assert status == 503 and doc["error"]["code"] == "store_unavailable"
                server.start()
                status, doc, _ = api.get("u")
                assert status == 200 and doc["vector"] == [1.0]
            finally:
                api.close()
    finally:
        server.kill()


def test_lte_serve_process_follows_a_rocksdb_writer_with_auth(tmp_path: Path) -> None:
    path = tmp_path / "store"
    writer_loop = asyncio.new_event_loop()
    from serving.rocksdb_store import RocksDBStore  # noqa: PLC0415

    writer = RocksDBStore(path, writer=True)
    writer_loop.run_until_complete(
        writer.write_batch(
            UpdateColumns.of([make_update("u", 1.0, 1.0, [1.0], basis_version="b")]), stored_at=1.0
        )
    )
    serve = LteProcess(
        ["serve", "--store", f"rocksdb://{path}", "--log-level", "debug"],
        tmp_path,
        "serve",
        env={"LTE_API_TOKEN": TOKEN, "LTE_API_BASIS_VERSION": "b", "LTE_API_ENCODER": "mean"},
        port_flag="--port",
    ).start()
    try:
        serve.wait_ready(timeout=30)
        assert http_status(serve.port, "/v1/lte/u") == 401
        writer_loop.run_until_complete(
            writer.write_batch(
                UpdateColumns.of([make_update("v", 2.0, 2.0, [2.0], basis_version="b")]),
                stored_at=2.0,
            )
        )

        def read(user: str) -> dict[str, Any] | None:
            async def fetch() -> dict[str, Any] | None:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(
                        f"http://127.0.0.1:{serve.port}/v1/lte/{user}",
                        headers={"Authorization": f"Bearer {TOKEN}"},
                    ) as resp,
                ):
                    doc: dict[str, Any] = orjson.loads(await resp.read())
                    return doc if resp.status == 200 else None

            return asyncio.run(fetch())

        assert (read("u") or {}).get("vector") == [1.0]
        doc = wait_until(lambda: read("v"), timeout=10, what="the follower to see a new write")
        assert doc is not None and doc["vector"] == [2.0]
        assert serve.metric("lte_api_request_duration_seconds_count") >= 3
        assert serve.stop() == 0
    finally:
        serve.kill()
        writer_loop.run_until_complete(writer.close())
        writer_loop.close()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--store", "redis://h/0?pool=1"], {}, "--store: unknown parameter(s) pool"),
        (["--store", "ftp://x"], {}, "--store: expected redis://"),
        (["--store", "rocksdb:///nonexistent/lte"], {}, "not a RocksDB store yet"),
        (["--max-batch", "0"], {}, "--max-batch"),
        (["--port", "70000"], {}, "--port"),
    ],
)
def test_lte_serve_refuses_bad_settings_with_one_line(
    args: list[str], env: dict[str, str], message: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lte_cli", "serve", "--port", "0", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env},
        timeout=60,
        check=False,
    )
    assert done.returncode in (1, 2), done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
