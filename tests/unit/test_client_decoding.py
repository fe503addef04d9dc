"""The client's content negotiation and error mapping, on answers built in memory (the
transport is tested against a real ``lte serve`` in tests/integration/test_client.py)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import orjson
import pytest

from serving.client import (
    DECODERS,
    LTE,
    Batch,
    BodyDecoder,
    JsonDecoder,
    LTEClient,
    LTEHTTPError,
    ServerError,
    UnsupportedResponseError,
    _Answer,
    _Call,
    accept_header,
)

BINARY = "application/octet-stream"


class MarkerDecoder:
    """Stands for the binary decoder of a later issue: it only proves it was chosen."""

    def one(self, body: bytes, headers: Mapping[str, str]) -> LTE:
        return LTE("from-binary", "b", "mean", None, None, 0, 0.0, 0, 0, 0, 0, 0, 0)

    def many(self, body: bytes, headers: Mapping[str, str]) -> Batch:
        return Batch("b", "mean", [self.one(body, headers)])


def _client(decoders: dict[str, BodyDecoder] | None = None) -> LTEClient:
    return LTEClient("http://127.0.0.1:1", "t", decoders=decoders)


def test_accept_lists_the_decoders_with_json_as_fallback() -> None:
    assert accept_header(DECODERS) == "application/octet-stream, application/json;q=0.9"
    assert accept_header({"application/json": JsonDecoder()}) == "application/json"
    both: dict[str, BodyDecoder] = {BINARY: MarkerDecoder(), "application/json": JsonDecoder()}
    assert accept_header(both) == "application/octet-stream, application/json;q=0.9"
    assert _client(both)._core.headers["Accept"] == accept_header(both)


def test_the_body_is_decoded_by_its_content_type() -> None:
    core = _client({BINARY: MarkerDecoder(), "application/json": JsonDecoder()})._core
    one = _Call("GET", "/v1/lte/u", None, batch=False)
    found = core.result(one, _Answer(200, BINARY, b"\x01"))
    assert isinstance(found, LTE) and found.user_id == "from-binary"
    doc = {
        "user_id": "u",
        "basis_version": "b",
        "encoder": "mean",
        "vector": [0.1, -2.5],
        "coefficients": [0.1],
        "n_events": 3,
        "weight_sum": 3.0,
        "as_of": 10.0,
        "window_start": 1.0,
        "window_end": 9.0,
        "due_at": 10.0,
        "produced_at": 10.5,
        "stored_at": 11.0,
    }
    found = core.result(one, _Answer(200, "application/json; charset=utf-8", orjson.dumps(doc)))
    assert isinstance(found, LTE) and found.vector is not None
    assert found.vector.dtype == np.float32
    assert found.vector.tobytes() == np.array([0.1, -2.5], np.float32).tobytes()
    with pytest.raises(UnsupportedResponseError, match="text/html"):
        _client()._core.result(one, _Answer(200, "text/html", b"<html>"))


def test_errors_map_to_their_class_with_the_servers_code() -> None:
    core = _client()._core
    one = _Call("GET", "/v1/lte/u", None, batch=False)
    batch = _Call("POST", "/v1/lte:batchGet", b"{}", batch=True)

    def error(status: int, code: str) -> _Answer:
        return _Answer(
            status, "application/json", orjson.dumps({"error": {"code": code, "message": "m"}})
        )

    missing = _Answer(
        404,
        "application/json",
        orjson.dumps({"error": {"code": "not_found", "message": "no LTE for user 'u' under …"}}),
    )
    assert core.result(one, missing) is None
    with pytest.raises(LTEHTTPError, match="base URL") as caught:
        core.result(one, error(404, "not_found"))  # the router's 404: a wrong URL
    with pytest.raises(LTEHTTPError) as caught:
        core.result(batch, error(404, "not_found"))
    assert caught.value.status == 404
    with pytest.raises(ServerError) as server:
        core.result(one, error(500, "corrupt_entry"))
    assert server.value.code == "corrupt_entry"
    with pytest.raises(ServerError, match="http_error: bad gateway"):
        core.result(one, _Answer(502, "text/plain", b"bad gateway"))
