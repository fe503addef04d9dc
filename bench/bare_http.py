"""The read API's reference in bench/serving.py: an aiohttp server whose only route returns a
fixed body of a given size — what aiohttp costs per request with no store, no lookup and no
encoding, served the same way ``lte serve`` is (one process, no access log).

With ``--redis-url`` each request first GETs ``<--redis-key-prefix><user_id>`` from Redis with
redis-py (one round trip on a pooled connection; the value is discarded): what a request
costs when it must wait for the store, which is the floor of any API that reads per request
without a cache.

    python -m bench.bare_http --port 8081 --size 1600 --content-type application/json
"""

from __future__ import annotations

import argparse

import redis.asyncio as aioredis
from aiohttp import web


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--content-type", default="application/octet-stream")
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--redis-key-prefix", default="")
    args = parser.parse_args()
    body = b"x" * args.size
    client = None if args.redis_url is None else aioredis.Redis.from_url(args.redis_url)
    prefix = args.redis_key_prefix.encode()

    async def answer(request: web.Request) -> web.Response:
        if client is not None:
            await client.get(prefix + request.match_info["user_id"].encode())
        return web.Response(body=body, content_type=args.content_type)

    async def ready(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/v1/lte/{user_id}", answer)
    app.router.add_get("/readyz", ready)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
