"""Flask-Sock (and simple-websocket, which it and Flask-SocketIO's threading mode use) run
unchanged: flask-asgi hands them the connection in ``environ["werkzeug.socket"]`` as
Werkzeug's server does. WSGI WebSocket APIs that flask-asgi cannot serve
(gevent-websocket's ``environ["wsgi.websocket"]``) are refused with a log line saying what
to do, never a silent 404 (issue 19)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
import pytest
import websockets
from flask import Flask, request, session
from flask_sock import Sock
from websockets.asyncio.client import connect

import flask_asgi
from flask_asgi.testing import WebSocketRejected

EXAMPLE = "examples/flask_sock_echo.py"


@pytest.mark.parametrize("server_name", ["uvicorn", "granian", "hypercorn"])
def test_flask_sock_echo_example(cli_server: Any, server_name: str) -> None:
    server = cli_server(EXAMPLE, extra=["--server", server_name, "--log-level", "warning"])
    url = f"ws://127.0.0.1:{server.port}/echo"

    async def scenario() -> None:
        async with connect(url, max_size=None) as ws:
            await ws.send("hello")
            assert await asyncio.wait_for(ws.recv(), 10) == "hello"
            await ws.send(b"\x00\xff")
            assert await asyncio.wait_for(ws.recv(), 10) == b"\x00\xff"
            big = "é" * 100_000  # several of the app's reads, and 16-bit-length frames
            await ws.send(big)
            assert await asyncio.wait_for(ws.recv(), 10) == big
            await ws.send("close")  # the handler returns: Flask-Sock closes with 1000
            with pytest.raises(websockets.ConnectionClosedOK) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
        async with connect(url) as ws:  # the client closes first this time
            await ws.send("again")
            assert await asyncio.wait_for(ws.recv(), 10) == "again"

    asyncio.run(scenario())
    server.stop()
    log = server.output()
    assert "Traceback" not in log and "rror" not in log, log


@pytest.fixture
def sock_app(app: Flask, asgi: flask_asgi.ASGI) -> Flask:
    app.secret_key = "dev"
    app.config["SOCK_SERVER_OPTIONS"] = {"subprotocols": ["chat"], "ping_interval": 0.2}
    sock = Sock(app)
    seen: list[Any] = []
    app.extensions["seen"] = seen

    @app.get("/login")
    def login() -> str:
        session["name"] = "ann"
        return "ok"

    @sock.route("/room/<name>")
    def room(ws: Any, name: str) -> None:
        seen.append((request.path, session.get("name"), ws.subprotocol))
        ws.send(f"{name}: {ws.receive()}")
        # Longer than simple-websocket's ping interval: its pings (select() on the socket
        # it was given) are answered, so it keeps the connection open.
        time.sleep(0.6)
        ws.send("still here")
        ws.close(4000, "bye")

    return app


def test_flask_sock_in_the_test_client(sock_app: Flask) -> None:
    """Routes, URL values, the session, subprotocols, a close code, and simple-websocket's
    ping thread, through flask-asgi's ASGI test client."""
    client = sock_app.test_client()
    client.get("/login")
    with client.websocket("/room/lobby", subprotocols=["chat"]) as ws:
        assert ws.accepted_subprotocol == "chat"
        ws.send("hi")
        assert ws.receive(timeout=10) == "lobby: hi"
        assert ws.receive(timeout=10) == "still here"
        with pytest.raises(flask_asgi.WebSocketDisconnect):
            ws.receive(timeout=10)
    assert (ws.close_code, ws.close_reason) == (4000, "bye")
    assert sock_app.extensions["seen"] == [("/room/lobby", "ann", "chat")]


def test_a_wsgi_websocket_api_flask_asgi_cannot_serve_is_named(
    app: Flask, asgi: flask_asgi.ASGI, caplog: pytest.LogCaptureFixture
) -> None:
    """Flask-Sockets-style middleware expects gevent-websocket's ``environ["wsgi.websocket"]``;
    without it the handshake reaches Flask, which has no such route. The refusal is logged
    with what flask-asgi does serve."""

    class GeventStyleSockets:
        def __init__(self, wsgi_app: Any) -> None:
            self.wsgi_app = wsgi_app

        def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
            ws = environ.get("wsgi.websocket")
            if ws is not None and environ["PATH_INFO"] == "/ws":
                ws.send(ws.receive())
                return []
            return self.wsgi_app(environ, start_response)

    app.wsgi_app = GeventStyleSockets(app.wsgi_app)  # type: ignore[method-assign]
    client = app.test_client()
    with caplog.at_level(logging.WARNING, logger="flask_asgi"):
        with pytest.raises(WebSocketRejected) as refused:
            with client.websocket("/ws"):
                pass
    assert refused.value.status_code == 404
    [record] = [r for r in caplog.records if "without an upgrade" in r.getMessage()]
    message = record.getMessage()
    assert "/ws" in message and "404" in message
    assert "environ['wsgi.websocket'] (gevent-websocket)" in message
    assert "@asgi.websocket" in message


def test_wsgi_code_that_writes_no_101_is_an_error(app: Flask, asgi: flask_asgi.ASGI) -> None:
    """Writing anything but ``101 Switching Protocols`` on ``werkzeug.socket`` is a
    programming error that says what to do instead."""
    app.config["PROPAGATE_EXCEPTIONS"] = True

    @app.route("/ws", websocket=True)
    def raw() -> str:
        request.environ["werkzeug.socket"].sendall(b"HTTP/1.1 403 Forbidden\r\n\r\n")
        return "unreachable"

    with pytest.raises(RuntimeError, match="return a WSGI response"):
        with app.test_client().websocket("/ws"):
            pass


def test_code_that_reads_another_servers_socket_is_told_what_to_do(
    app: Flask, asgi: flask_asgi.ASGI, caplog: pytest.LogCaptureFixture
) -> None:
    """A route or a middleware that reads ``environ["wsgi.websocket"]`` (gevent-websocket)
    or ``environ["eventlet.input"]`` fails with a 500 and an error naming the way out,
    not a bare ``KeyError``."""
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.route("/gevent", websocket=True)
    def gevent_style() -> None:
        ws = request.environ["wsgi.websocket"]
        ws.send(ws.receive())

    class EventletStyle:
        def __init__(self, wsgi_app: Any) -> None:
            self.app = wsgi_app

        def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
            if environ["PATH_INFO"] == "/eventlet":
                environ["eventlet.input"].get_socket()
            return self.app(environ, start_response)

    walkable = EventletStyle(app.wsgi_app)

    def closure(environ: dict[str, Any], start_response: Any) -> Any:
        # A plain function: flask-asgi cannot look inside, so the handshake reaches it
        # through app.wsgi_app itself.
        if environ["PATH_INFO"] == "/closure":
            environ["wsgi.websocket"].receive()
        return walkable(environ, start_response)

    client = app.test_client()
    cases = [
        (walkable, "/gevent", "wsgi.websocket"),  # the route
        (walkable, "/eventlet", "eventlet.input"),  # a middleware flask-asgi walks through
        (closure, "/closure", "wsgi.websocket"),  # one that gets the handshake itself
        (closure, "/eventlet", "eventlet.input"),
    ]
    for wsgi_app, path, key in cases:
        app.wsgi_app = wsgi_app  # type: ignore[method-assign]
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="flask_asgi"):
            with pytest.raises(WebSocketRejected) as refused:
                with client.websocket(path):
                    pass
        assert refused.value.status_code == 500
        [record] = [r for r in caplog.records if "looked for environ" in r.getMessage()]
        message = record.getMessage()
        assert path in message and repr(key) in message and "@asgi.websocket" in message


def test_raw_wsgi_code_on_werkzeug_socket(app: Flask, asgi: flask_asgi.ASGI) -> None:
    """Any code that speaks RFC 6455 on ``werkzeug.socket`` works, not only
    simple-websocket: an answer written in pieces, a fragmented message, a ping answered
    with a pong on the socket, the client's frames masked (each with its own key), a close
    code."""
    seen: list[Any] = []

    @app.route("/raw", websocket=True)
    def raw() -> str:
        sock = request.environ["werkzeug.socket"]

        def exactly(size: int) -> bytes:
            data = b""
            while len(data) < size:
                data += sock.recv(size - len(data))
            return data

        sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n")
        sock.sendall(b"Sec-WebSocket-Protocol: raw\r\n\r\n")
        sock.sendall(bytes([0x01, 3]) + b"hel")  # text, not final
        sock.sendall(bytes([0x80, 2]) + b"lo" + bytes([0x89, 1]))  # continuation; a ping...
        sock.sendall(b"!")  # ...whose payload comes in another write
        for _ in range(2):  # the pong, then the client's message
            header = exactly(2)
            assert header[1] & 0x80  # masked, as a client's frames must be
            mask = exactly(4)
            payload = exactly(header[1] & 0x7F)
            seen.append((header[0], bytes(b ^ mask[i % 4] for i, b in enumerate(payload))))
        sock.sendall(bytes([0x88, 4]) + (4001).to_bytes(2, "big") + b"ok")
        return ""

    with app.test_client().websocket("/raw", subprotocols=["raw"]) as ws:
        assert ws.accepted_subprotocol == "raw"
        assert ws.receive(timeout=10) == "hello"
        ws.send(b"\x01\x02")
        with pytest.raises(flask_asgi.WebSocketDisconnect):
            ws.receive(timeout=10)
    assert (ws.close_code, ws.close_reason) == (4001, "ok")
    assert seen == [(0x8A, b"!"), (0x82, b"\x01\x02")]  # a final pong, a final binary frame


@pytest.mark.parametrize(
    ("written", "code"),
    [
        # A masked frame: a server's frames never are, and a client library rejects one.
        (bytes([0x81, 0x82]) + b"\x01\x02\x03\x04" + bytes([ord("h") ^ 1, ord("i") ^ 2]), 1002),
        (bytes([0x81, 2]) + b"\xff\xfe", 1007),  # a text message that is not UTF-8
        (bytes([0x09, 0]), 1002),  # a fragmented ping
    ],
)
def test_a_frame_no_client_accepts_fails_the_connection(
    app: Flask, asgi: flask_asgi.ASGI, written: bytes, code: int
) -> None:
    """What the app writes on ``werkzeug.socket`` is checked as a client library checks a
    server's frames (wsproto's). A frame such a library rejects fails the connection as it
    would: the client gets the close code that says why; the app reads a close frame with
    that code, then the end of its socket; its next write fails."""
    seen: list[Any] = []

    @app.route("/raw", websocket=True)
    def raw() -> str:
        sock = request.environ["werkzeug.socket"]
        sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
        sock.sendall(bytes([0x81, 2]) + b"ok")
        sock.sendall(written)
        received = b""
        while chunk := sock.recv(1024):  # to the end of the socket
            received += chunk
        seen.append(received)
        try:
            sock.sendall(bytes([0x81, 4]) + b"late")
        except BrokenPipeError:
            seen.append("broken pipe")
        return ""

    with app.test_client().websocket("/raw") as ws:
        assert ws.receive(timeout=10) == "ok"  # frames before the bad one went through
        with pytest.raises(flask_asgi.WebSocketDisconnect):
            ws.receive(timeout=10)
    assert ws.close_code == code
    [received, broken] = seen
    assert received[0] == 0x88 and received[1] & 0x80  # one masked close frame, then the end
    mask, payload = received[2:6], received[6:]
    assert len(payload) == received[1] & 0x7F
    assert int.from_bytes(bytes(b ^ mask[i % 4] for i, b in enumerate(payload[:2]))) == code
    assert broken == "broken pipe"


def test_open_flask_sock_connections_leave_the_worker_pool_to_views(
    cli_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Flask-Sock handler keeps its worker for the whole connection; once it has taken
    the connection, that worker is lent to it and the pool may start another: with twice
    as many connections open as FLASK_ASGI_THREADS, every one echoes and a sync view still
    answers at once."""
    monkeypatch.setenv("FLASK_ASGI_THREADS", "2")
    server = cli_server(EXAMPLE, extra=["--log-level", "warning"])
    url = f"ws://127.0.0.1:{server.port}/echo"

    async def scenario() -> None:
        sockets = [await asyncio.wait_for(connect(url), 10) for _ in range(4)]
        try:
            for n, ws in enumerate(sockets):
                await ws.send(f"n{n}")
                assert await asyncio.wait_for(ws.recv(), 10) == f"n{n}"
            async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
                started = time.monotonic()
                assert (await http.get("/")).status_code == 200
                assert time.monotonic() - started < 1
        finally:
            for ws in sockets:
                await ws.close()
        # The connections are closed: the pool is back to its bound, and still works.
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
            assert all(r.status_code == 200 for r in [await http.get("/") for _ in range(5)])

    asyncio.run(scenario())


def test_a_burst_of_flask_sock_handshakes_all_connect(
    cli_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Handshakes that arrive together queue in the worker pool before any has taken its
    connection; each worker lent to a connection makes the pool start another at once, so
    every queued handshake gets a thread. (Before, the pool started one only at the next
    submit: with 2 threads the others waited for a later request, and this test failed; at
    1,000 clients on the default 40 threads, 292 of 1,000 connected in 120 s.)"""
    monkeypatch.setenv("FLASK_ASGI_THREADS", "2")
    server = cli_server(EXAMPLE, extra=["--log-level", "warning"])
    url = f"ws://127.0.0.1:{server.port}/echo"

    async def scenario() -> None:
        sockets = await asyncio.wait_for(asyncio.gather(*(connect(url) for _ in range(40))), 30)
        try:
            for n, ws in enumerate(sockets):
                await ws.send(f"n{n}")
            for n, ws in enumerate(sockets):
                assert await asyncio.wait_for(ws.recv(), 10) == f"n{n}"
        finally:
            await asyncio.gather(*(ws.close() for ws in sockets))

    asyncio.run(scenario())
