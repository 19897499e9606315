"""WebSocket routes under a WSGI server answer ``426 Upgrade Required`` saying why, instead
of a 500 from the unbound ``websocket`` proxy; HTTP routes are untouched."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets
from flask import Flask, copy_current_request_context
from helpers import free_port
from websockets.asyncio.client import connect
from werkzeug.serving import make_server
from werkzeug.test import Client

import flask_asgi
from flask_asgi import websocket

HANDSHAKE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}
MESSAGE = b"WebSockets need an ASGI server"


@pytest.fixture
def ws_app(app: Flask, asgi: flask_asgi.ASGI) -> Flask:
    @asgi.websocket("/async")
    async def echo() -> None:
        async for message in websocket:
            await websocket.send(message)

    @asgi.websocket("/sync/<room>")
    def sync_echo(room: str) -> None:
        websocket.accept()
        for message in websocket:
            websocket.send(message)

    @app.get("/")
    async def index() -> str:
        return "http still works"

    return app


@pytest.fixture
def werkzeug_server(ws_app: Flask) -> Iterator[str]:
    """The app on Werkzeug's own development server (what ``flask run`` uses), in a thread."""
    port = free_port()
    server = make_server("127.0.0.1", port, ws_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.shutdown()
        thread.join(10)


@pytest.mark.parametrize("path", ["/async", "/sync/lobby"])
async def test_a_real_websocket_client_gets_426(werkzeug_server: str, path: str) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(f"ws://{werkzeug_server}{path}", open_timeout=20):
            pass
    response = refused.value.response
    assert response.status_code == 426
    assert response.headers["Upgrade"] == "websocket"
    assert MESSAGE in response.body


@pytest.mark.parametrize("path", ["/async", "/sync/lobby"])
def test_raw_upgrade_request_and_plain_http(werkzeug_server: str, path: str) -> None:
    base = f"http://{werkzeug_server}"
    upgrade = httpx.get(base + path, headers=HANDSHAKE, timeout=20)
    assert upgrade.status_code == 426 and MESSAGE.decode() in upgrade.text
    assert httpx.get(base + path, timeout=20).status_code == 400  # Werkzeug: not a handshake
    assert httpx.get(base + "/", timeout=20).text == "http still works"


def test_werkzeug_test_client_on_wsgi_app(ws_app: Flask) -> None:
    client = Client(ws_app.wsgi_app)
    for path in ("/async", "/sync/x"):
        response = client.get(path, headers=HANDSHAKE)
        assert response.status_code == 426
        assert MESSAGE in response.data
    assert client.get("/").text == "http still works"


def test_the_426_can_be_handled_like_any_http_error(ws_app: Flask) -> None:
    @ws_app.errorhandler(flask_asgi.WebSocketNeedsASGI)
    def needs_asgi(error: Any) -> tuple[dict[str, Any], int]:
        return {"error": error.description}, 426

    response = Client(ws_app.wsgi_app).get("/async", headers=HANDSHAKE)
    assert response.status_code == 426
    assert "flask serve" in response.json["error"]


def test_a_thread_of_a_real_connection_may_still_await(
    ws_app: Flask, asgi: flask_asgi.ASGI
) -> None:
    """Under ASGI, a thread the handler starts (with its request context) is not mistaken
    for a WSGI request: its ``await_`` runs on the background loop as before."""
    import asyncio

    results: list[Any] = []

    @asgi.websocket("/thread")
    async def threaded() -> None:
        await websocket.accept()

        @copy_current_request_context
        def work() -> None:
            results.append(flask_asgi.await_(asyncio.sleep(0, result="awaited")))

        thread = threading.Thread(target=work)
        thread.start()
        await flask_asgi.run_sync(thread.join)
        await websocket.send(str(results))

    with ws_app.test_client().websocket("/thread") as ws:
        assert ws.receive() == "['awaited']"


def test_outside_any_request_the_proxy_still_says_so() -> None:
    with pytest.raises(RuntimeError, match="outside of a WebSocket connection"):
        websocket.receive()
