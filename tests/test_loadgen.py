"""The benchmark's load generator: its own HTTP/1.1 client and its request bodies.

A wrong client would make every API figure wrong, so it is checked against aiohttp's
server: keep-alive, responses split across reads, a server that closes, a dead server.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bench.api_bench import POST_BODY
from bench.loadgen import REQUEST_ERRORS, Connection, LoadGen


def port(server: TestServer) -> int:
    assert server.port is not None
    return server.port


async def serve() -> TestServer:
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        if request.query.get("close"):
            return web.json_response({"len": len(body)}, headers={"Connection": "close"})
        if request.query.get("big"):
            return web.Response(body=b"x" * 300_000)  # more than one read's worth
        return web.json_response({"len": len(body), "cookie": request.headers.get("Cookie")},
                                 status=202)

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


async def test_requests_on_one_connection_and_after_the_server_closes_it() -> None:
    server = await serve()
    try:
        conn = Connection("127.0.0.1", port(server), {"Cookie": "a=b"})
        for n in range(50):
            status, raw = await conn.request("POST", "/echo", b"y" * n)
            assert (status, json.loads(raw)) == (202, {"len": n, "cookie": "a=b"})
        protocol = conn.protocol
        status, raw = await conn.request("GET", "/echo?big=1")
        assert (status, len(raw), conn.protocol) == (200, 300_000, protocol)  # kept alive
        status, raw = await conn.request("GET", "/echo?close=1")
        assert status == 200 and conn.protocol is None  # the server said it closes
        assert (await conn.request("POST", "/echo", b"zz"))[0] == 202  # reconnected
        conn.close()
    finally:
        await server.close()
    with pytest.raises(REQUEST_ERRORS):
        await conn.request("GET", "/echo")  # nobody listens any more


async def test_concurrent_connections_each_get_their_own_answers() -> None:
    server = await serve()
    try:
        conns = [Connection("127.0.0.1", port(server), {}) for _ in range(16)]

        async def worker(n: int) -> list[int]:
            return [json.loads((await conns[n].request("POST", "/echo", b"q" * (n + i)))[1])
                    ["len"] - n for i in range(20)]

        assert await asyncio.gather(*(worker(n) for n in range(16))) == [list(range(20))] * 16
    finally:
        await server.close()


def test_every_body_is_the_configured_one_with_a_distinct_input() -> None:
    gen = LoadGen({"base_url": "http://127.0.0.1:1", "cookie": "c", "post_body": POST_BODY,
                   "max_seconds": 1})
    bodies = [json.loads(gen._body()) for _ in range(3)]
    first = next(iter(POST_BODY["input_files"]))
    for body in bodies:
        assert {k: v for k, v in body.items() if k != "input_files"} == {
            k: v for k, v in POST_BODY.items() if k != "input_files"}
        assert body["input_files"].keys() == POST_BODY["input_files"].keys()
        assert body["input_files"][first].startswith(POST_BODY["input_files"][first])
    assert len({b["input_files"][first] for b in bodies}) == 3
