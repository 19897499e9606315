"""Streamed responses arrive incrementally; big bodies are streamed; headers survive as sent."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from flask import Flask, Response, make_response, request
from helpers import wait_async

import flask_asgi


def build_app() -> tuple[Flask, flask_asgi.ASGI, dict[str, threading.Event]]:
    app = Flask(__name__)
    asgi = flask_asgi.ASGI(app)
    gates = {name: threading.Event() for name in ("async", "sync", "sync-view-async-gen")}

    async def gated_events(gate: threading.Event) -> AsyncIterator[str]:
        # The second chunk is only produced once the client has the first: a buffered
        # response would never let the client see "first".
        yield f"first {request.args['tag']};"
        yield "second;" if await wait_async(gate) else "TIMEOUT (first chunk not delivered);"

    @app.get("/async-gen")
    async def async_gen() -> Any:
        return flask_asgi.stream(gated_events(gates["async"]))

    @app.get("/sync-view-async-gen")
    def sync_view_async_gen() -> Any:
        return flask_asgi.stream(gated_events(gates["sync-view-async-gen"]))

    @app.get("/sync-gen")
    def sync_gen() -> Any:
        def generate() -> Iterator[str]:
            yield "first sync;"
            yield "second;" if gates["sync"].wait(10) else "TIMEOUT;"

        return Response(generate(), mimetype="text/plain")

    return app, asgi, gates


@pytest.mark.parametrize(
    ("path", "gate", "first"),
    [
        ("/async-gen?tag=a", "async", b"first a;"),
        ("/sync-view-async-gen?tag=b", "sync-view-async-gen", b"first b;"),
        ("/sync-gen", "sync", b"first sync;"),
    ],
)
def test_chunks_arrive_incrementally(live_server: Any, path: str, gate: str, first: bytes) -> None:
    app, asgi, gates = build_app()
    base = live_server(asgi)
    with httpx.stream("GET", base + path, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers.get("Transfer-Encoding") == "chunked"
        iterator = response.iter_raw()
        received = next(iterator)
        assert received == first
        gates[gate].set()
        for piece in iterator:
            received += piece
    assert received == first + b"second;"


def test_stream_accepts_any_async_iterable(app: Flask, client: Any) -> None:
    class Countdown:
        def __init__(self, start: int) -> None:
            self.current = start

        def __aiter__(self) -> Countdown:
            return self

        async def __anext__(self) -> str:
            if self.current == 0:
                raise StopAsyncIteration
            self.current -= 1
            await asyncio.sleep(0)
            return f"{self.current + 1} "

    @app.get("/countdown")
    async def countdown() -> Any:
        return flask_asgi.stream(Countdown(3))

    assert client.get("/countdown").text == "3 2 1 "


def asgi_messages(asgi: flask_asgi.ASGI, path: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "query_string": b"", "headers": []}
    asyncio.run(asyncio.wait_for(asgi(scope, receive, send), 10))
    return messages


def test_small_body_is_one_message_large_body_is_streamed() -> None:
    app = Flask(__name__)
    asgi = flask_asgi.ASGI(app)
    big = b"0123456789abcdef" * (64 * 1024)  # 1 MiB > the 256 KiB default buffer

    @app.get("/small")
    async def small() -> bytes:
        return b"tiny"

    @app.get("/big")
    async def big_view() -> bytes:
        return big

    @app.get("/big-sync")
    def big_sync() -> bytes:
        return big

    small_messages = asgi_messages(asgi, "/small")
    assert [m["type"] for m in small_messages] == ["http.response.start", "http.response.body"]
    assert small_messages[1]["body"] == b"tiny"
    assert not small_messages[1].get("more_body", False)

    for path in ("/big", "/big-sync"):
        messages = asgi_messages(asgi, path)
        assert messages[0]["type"] == "http.response.start"
        assert (b"content-length", str(len(big)).encode()) in messages[0]["headers"]
        bodies = messages[1:]
        assert len(bodies) >= 2
        assert all(m.get("more_body") for m in bodies[:-1])
        assert not bodies[-1].get("more_body", False)
        assert b"".join(m["body"] for m in bodies) == big


def test_response_buffer_is_configurable() -> None:
    app = Flask(__name__)
    app.config["FLASK_ASGI_RESPONSE_BUFFER"] = 10
    asgi = flask_asgi.ASGI(app)

    @app.get("/")
    async def index() -> str:
        return "more than ten bytes"

    messages = asgi_messages(asgi, "/")
    assert len(messages) > 2
    assert messages[1]["more_body"] is True
    assert b"".join(m["body"] for m in messages[1:]) == b"more than ten bytes"


def test_large_body_through_uvicorn(live_server: Any) -> None:
    app = Flask(__name__)
    asgi = flask_asgi.ASGI(app)
    big = bytes(range(256)) * (16 * 1024)  # 4 MiB

    @app.get("/big")
    async def big_view() -> bytes:
        return big

    base = live_server(asgi)
    response = httpx.get(base + "/big", timeout=30)
    assert response.headers["Content-Length"] == str(len(big))
    assert response.content == big


def test_multi_value_headers_and_cookies(live_server: Any) -> None:
    app = Flask(__name__)
    asgi = flask_asgi.ASGI(app)

    @app.get("/headers")
    async def headers() -> Any:
        response = make_response(
            {
                "repeated": request.headers.get("X-Repeated"),
                "cookies": dict(request.cookies),
            }
        )
        response.headers.add("X-Multi", "one")
        response.headers.add("X-Multi", "two")
        response.set_cookie("a", "1")
        response.set_cookie("b", "2", path="/headers", samesite="Lax")
        return response

    @app.get("/stream-headers")
    def stream_headers() -> Any:
        response = Response(iter(["x", "y"]))
        response.headers.add("X-Multi", "s1")
        response.headers.add("X-Multi", "s2")
        response.set_cookie("c", "3")
        response.set_cookie("d", "4")
        return response

    base = live_server(asgi)
    response = httpx.get(
        base + "/headers",
        headers=[("X-Repeated", "1"), ("X-Repeated", "2"), ("Cookie", "k=v; k2=v2")],
    )
    assert response.json() == {"repeated": "1,2", "cookies": {"k": "v", "k2": "v2"}}
    assert response.headers.get_list("X-Multi") == ["one", "two"]
    set_cookies = response.headers.get_list("Set-Cookie")
    assert len(set_cookies) == 2
    assert set_cookies[0].startswith("a=1;")
    assert set_cookies[1].startswith("b=2;") and "SameSite=Lax" in set_cookies[1]

    response = httpx.get(base + "/stream-headers")
    assert response.text == "xy"
    assert response.headers.get_list("X-Multi") == ["s1", "s2"]
    assert [c.split(";")[0] for c in response.headers.get_list("Set-Cookie")] == ["c=3", "d=4"]


def test_head_of_large_and_streamed_responses(live_server: Any) -> None:
    app = Flask(__name__)
    asgi = flask_asgi.ASGI(app)
    big = b"z" * (1024 * 1024)

    @app.get("/big")
    async def big_view() -> bytes:
        return big

    @app.get("/gen")
    async def gen() -> Any:
        async def chunks() -> AsyncIterator[str]:
            yield "a"
            yield "b"

        return flask_asgi.stream(chunks())

    base = live_server(asgi)
    head = httpx.head(base + "/big")
    assert head.status_code == 200
    assert head.headers["Content-Length"] == str(len(big))
    assert head.content == b""
    head = httpx.head(base + "/gen")
    assert head.status_code == 200 and head.content == b""
    assert httpx.get(base + "/gen").text == "ab"
