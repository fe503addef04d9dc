"""``serving.client`` (sync and async) against a real ``lte serve`` process over a real Redis.
What the clients return is compared with the updates the test wrote into the store."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pytest

from lte_core.update import LTEUpdate
from lte_runtime.ports import free_port
from lte_runtime.redis_server import RedisServer
from serving.client import (
    DECODERS,
    LTE,
    AsyncLTEClient,
    BadRequestError,
    Batch,
    BodyDecoder,
    LTEClient,
    LTEConnectionError,
    LTEHTTPError,
    NoVersionError,
    ServiceUnavailableError,
    UnauthorizedError,
)
from serving.store_url import RedisLocation
from tests.integration.harness import LteProcess, unique
from tests.integration.store_backends import make_update, sync_store

TOKEN = "client-test-token"  # noqa: S105 - a test token
FIELDS = (
    *("user_id", "basis_version", "encoder", "n_events", "weight_sum", "as_of"),
    *("window_start", "window_end", "due_at", "produced_at"),
)


@dataclass
class Served:
    process: LteProcess
    server: RedisServer
    basis: str
    written: dict[str, LTEUpdate]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.process.port}"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("client")
    server = RedisServer(tmp / "redis").start()
    basis = unique("basis")
    rng = np.random.default_rng(7)
    users = [f"user-{i}" for i in range(60)] + ["a/b:c d", "ünïcode-✓"]
    updates = [
        make_update(u, 1.7e9 + i, 1.7e9 + i, rng.standard_normal(32), basis_version=basis, k=8)
        for i, u in enumerate(users)
    ]
    updates.append(make_update("emptied", 1.7e9, 1.7e9, None, basis_version=basis))
    with sync_store(RedisLocation(server.host, server.port, 0)) as store:
        store.write(updates, stored_at=1.8e9)
    process = LteProcess(
        ["serve", "--store", server.url],
        tmp,
        "serve",
        env={"LTE_API_TOKEN": TOKEN},
        port_flag="--port",
    ).start()
    try:
        process.wait_ready(timeout=60)
        yield Served(process, server, basis, {u.user_id: u for u in updates})
    finally:
        process.kill()
        server.kill()


def _same(got: LTE | None, want: LTEUpdate) -> bool:
    if got is None or any(getattr(got, f) != getattr(want, f) for f in FIELDS):
        return False
    for name in ("vector", "coefficients"):
        a, b = getattr(got, name), getattr(want, name)
        if (a is None) != (b is None):
            return False
        if a is not None and (a.dtype != np.float32 or a.tobytes() != b.tobytes()):
            return False
    return got.stored_at == 1.8e9


def _ids(served: Served) -> list[str]:
    return [*served.written, "nobody", *list(served.written)[:3]]


def _check_many(served: Served, ids: Sequence[str], got: Sequence[LTE | None]) -> None:
    assert len(got) == len(ids)
    for user, lte in zip(ids, got, strict=True):
        want = served.written.get(user)
        assert (lte is None) if want is None else _same(lte, want), user


class Counted:
    """A registered decoder that counts the bodies it decoded (which format was served)."""

    def __init__(self, inner: BodyDecoder) -> None:
        self.inner = inner
        self.bodies = 0

    def one(self, body: bytes, headers: Mapping[str, str]) -> LTE:
        self.bodies += 1
        return self.inner.one(body, headers)

    def many(self, body: bytes, headers: Mapping[str, str]) -> Batch:
        self.bodies += 1
        return self.inner.many(body, headers)


@pytest.fixture(params=["binary", "json"])
def decoders(request: pytest.FixtureRequest) -> Iterator[dict[str, Counted]]:
    """The default table (binary preferred, JSON fallback), or JSON alone; after the test,
    only the first decoder was used: the server answered the preferred format."""
    chosen = {m: Counted(d) for m, d in DECODERS.items()}
    if request.param == "json":
        chosen = {"application/json": chosen["application/json"]}
    yield chosen
    first, *rest = chosen.values()
    assert first.bodies > 0 and all(d.bodies == 0 for d in rest)


def test_sync_client_reads_what_was_written(
    served: Served, decoders: dict[str, BodyDecoder]
) -> None:
    with LTEClient(served.url, TOKEN, batch_size=7, decoders=decoders) as client:
        for user, update in served.written.items():
            assert _same(client.get(user), update), user
        assert client.get("nobody") is None
        ids = _ids(served)
        _check_many(served, ids, client.get_many(ids))
        explicit = client.get_many(ids[:5], basis_version=served.basis, encoder="mean")
        _check_many(served, ids[:5], explicit)
        emptied = client.get("emptied")
        assert emptied is not None and emptied.vector is None and emptied.n_events == 0
        assert TOKEN not in repr(client)


def test_async_client_reads_what_was_written(
    served: Served, decoders: dict[str, BodyDecoder]
) -> None:
    async def scenario() -> None:
        async with AsyncLTEClient(served.url, TOKEN, batch_size=7, decoders=decoders) as client:
            got = await asyncio.gather(*(client.get(u) for u in served.written))
            for lte, update in zip(got, served.written.values(), strict=True):
                assert _same(lte, update), update.user_id
            assert await client.get("nobody") is None
            ids = _ids(served)
            _check_many(served, ids, await client.get_many(ids))

    asyncio.run(scenario())


def test_errors_carry_the_servers_json_error(served: Served) -> None:
    with LTEClient(served.url, None, retries=0) as anonymous:
        with pytest.raises(UnauthorizedError) as caught:
            anonymous.get("user-1")
        assert caught.value.status == 401 and caught.value.code == "unauthorized"
    with LTEClient(served.url, TOKEN) as client:
        with pytest.raises(BadRequestError) as bad:
            client.get("x" * 300)
        assert bad.value.code == "bad_request" and "user_id" in bad.value.message
        with (
            LTEClient(f"{served.url}/not-the-api", TOKEN) as misrouted,
            pytest.raises(LTEHTTPError, match="base URL"),
        ):
            misrouted.get("user-1")  # a router 404 is an error, not "no LTE"
        with pytest.raises(NoVersionError) as missing:
            client.get("user-1", basis_version="never-written")
        assert missing.value.code == "no_version" and "never-written" in missing.value.message

    async def scenario() -> None:
        async with AsyncLTEClient(served.url, "wrong", retries=0) as client:
            with pytest.raises(UnauthorizedError, match="wrong API token"):
                await client.get_many(["user-1"])

    asyncio.run(scenario())


def test_nothing_listening_is_a_connection_error_after_the_retries() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with (
        LTEClient(url, TOKEN, retries=2, backoff=0.01) as client,
        pytest.raises(LTEConnectionError, match="after 3 attempts"),
    ):
        client.get("user-1")

    async def scenario() -> None:
        async with AsyncLTEClient(url, TOKEN, retries=1, backoff=0.01) as client:
            with pytest.raises(LTEConnectionError, match="after 2 attempts"):
                await client.get_many(["user-1"])

    asyncio.run(scenario())


def test_a_503_is_retried_then_raised_and_reads_resume(served: Served) -> None:
    """Only reads exist, so a 503 (the store is down) is retried: three attempts reach the
    server, then the error; with the store back the same client reads again."""

    def answered_503() -> float:
        labels = {"status": "503"}
        return served.process.metric("lte_api_request_duration_seconds_count", labels)

    with LTEClient(served.url, TOKEN, retries=2, backoff=0.01) as client:
        assert client.get("user-1") is not None
        served.server.stop()
        try:
            before = answered_503()
            with pytest.raises(ServiceUnavailableError) as caught:
                client.get("user-1")
            assert caught.value.code == "store_unavailable"
            assert answered_503() - before == 3
        finally:
            served.server.start()
        assert _same(client.get("user-1"), served.written["user-1"])
