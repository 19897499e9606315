"""An unmodified Flask-SocketIO app (examples/flask_socketio_chat.py) on ``flask serve``:
python-socketio's real clients on the WebSocket transport reach Flask-SocketIO's own
handlers, with ``request.sid``, ``session``, rooms, broadcasts, acks, and emits from a sync
view and a background task, on uvicorn, granian and hypercorn (issue 19)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio
import websockets
from websockets.asyncio.client import connect

EXAMPLE = "examples/flask_socketio_chat.py"
SERVERS = ["uvicorn", "granian", "hypercorn"]


class Client:
    """A python-socketio ``AsyncClient`` on the WebSocket transport that queues its events."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.sio.on("*", self.record)
        self.sio.on("message", self.message)

    async def record(self, event: str, data: Any) -> None:
        await self.events.put((event, data))

    async def message(self, data: Any) -> None:
        await self.events.put(("message", data))

    async def connect(self, base_url: str, name: str, transports: list[str] | None = None) -> None:
        await self.sio.connect(
            base_url, transports=transports or ["websocket"], auth={"name": name}, wait_timeout=20
        )

    async def next(self) -> tuple[str, Any]:
        return await asyncio.wait_for(self.events.get(), 20)

    async def close(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.sio.disconnect(), 5)


def threads_of(pid: int) -> int:
    """How many threads the server process runs now (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


@pytest.mark.parametrize("server_name", SERVERS)
def test_unchanged_flask_socketio_app_on_websockets(cli_server: Any, server_name: str) -> None:
    server = cli_server(EXAMPLE, extra=["--server", server_name, "--log-level", "warning"])

    async def scenario() -> None:
        ann, bob = Client(), Client()
        async with httpx.AsyncClient(base_url=server.base_url, timeout=20) as http:
            try:
                await ann.connect(server.base_url, "ann")
                await bob.connect(server.base_url, "bob")
                assert ann.sio.transport() == bob.sio.transport() == "websocket"
                # The connect handler sees request.sid and the auth; emit() goes to the sender.
                assert await ann.next() == ("welcome", {"sid": ann.sio.get_sid(), "name": "ann"})
                assert await bob.next() == ("welcome", {"sid": bob.sio.get_sid(), "name": "bob"})

                # join_room, emit to the room, and the handler's return value as the ack.
                ack = await ann.sio.call("join", "lobby", timeout=20)
                assert ack == {"room": "lobby", "rooms": sorted([ann.sio.get_sid(), "lobby"])}
                assert await ann.next() == ("joined", {"name": "ann", "room": "lobby"})
                # session set at connect is there in later events; request.sid too.
                whoami = await bob.sio.call("whoami", timeout=20)
                assert whoami == {"sid": bob.sio.get_sid(), "name": "bob"}

                # send(..., broadcast=True) reaches everyone, the sender included.
                await bob.sio.send("hello")
                assert await ann.next() == ("message", "bob: hello")
                assert await bob.next() == ("message", "bob: hello")

                # emit(..., to=room): only the room's members.
                await bob.sio.emit("chat", {"text": "psst", "room": "lobby"})
                assert await ann.next() == ("chat", {"name": "bob", "text": "psst"})

                # A sync Flask view emits to every client, on the same port.
                assert (await http.post("/announce", json={"n": 1})).json() == {"sent": True}
                assert await ann.next() == ("announcement", {"n": 1})
                assert await bob.next() == ("announcement", {"n": 1})
                # So does a background task.
                assert (await http.post("/countdown")).json() == {"started": True}
                for n in (3, 2, 1):
                    assert await ann.next() == ("countdown", n)
                    assert await bob.next() == ("countdown", n)
                assert bob.events.empty()  # bob saw nothing of the room
                assert (await http.get("/")).status_code == 200

                # bob leaves: the disconnect handler runs and tells the others.
                await bob.close()
                assert await ann.next() == ("left", "bob")
            finally:
                await ann.close()
                await bob.close()

    asyncio.run(scenario())
    server.stop()
    log = server.output()
    assert "Traceback" not in log and "Error" not in log, log


def test_connections_end_with_their_threads_and_flask_views_stay_free(
    cli_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each upgraded connection has threads of its own (not the worker pool's, so more
    connections than FLASK_ASGI_THREADS leave sync views free), and gives them back when
    it closes, with its file descriptors."""
    monkeypatch.setenv("FLASK_ASGI_THREADS", "4")
    server = cli_server(EXAMPLE, extra=["--log-level", "warning"])
    pid = server.proc.pid

    async def scenario() -> None:
        before = threads_of(pid)
        fds_before = len(os.listdir(f"/proc/{pid}/fd"))
        clients = [Client() for _ in range(12)]  # three times the worker pool
        try:
            for n, client in enumerate(clients):
                await client.connect(server.base_url, f"c{n}")
            async with httpx.AsyncClient(base_url=server.base_url, timeout=5) as http:
                started = time.monotonic()
                assert (await http.get("/")).status_code == 200
                assert time.monotonic() - started < 1
            # A connection thread, simple-websocket's reader, engineio's writer and pinger.
            assert threads_of(pid) >= before + 4 * len(clients)
            for client in clients:
                assert await client.sio.call("whoami", timeout=20) is not None
        finally:
            for client in clients:
                await client.close()
        # What may stay: the worker pool (4), engineio's service thread, and each closed
        # session's pinger, which engineio ends at its next ping (25 s), as under Werkzeug.
        allowed = before + 4 + 1 + len(clients)
        deadline = time.monotonic() + 10
        while threads_of(pid) > allowed and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert threads_of(pid) <= allowed
        # The connection, and both ends of the socket pair each one had, are closed (by
        # threads that end on their own: waited for, as the threads are).
        deadline = time.monotonic() + 10
        while len(os.listdir(f"/proc/{pid}/fd")) > fds_before and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert len(os.listdir(f"/proc/{pid}/fd")) <= fds_before

    asyncio.run(scenario())


@pytest.mark.parametrize("server_name", SERVERS)
def test_default_client_upgrades_from_polling(cli_server: Any, server_name: str) -> None:
    """A client with both transports (the default, and the browser's) starts with a
    long-poll and upgrades to a WebSocket, as under Werkzeug's server."""
    server = cli_server(EXAMPLE, extra=["--server", server_name, "--log-level", "warning"])

    async def scenario() -> None:
        ann = Client()
        try:
            await ann.connect(server.base_url, "ann", transports=["polling", "websocket"])
            assert (await ann.next())[0] == "welcome"
            for _ in range(100):
                if ann.sio.transport() == "websocket":
                    break
                await asyncio.sleep(0.1)
            assert ann.sio.transport() == "websocket"
            assert await ann.sio.call("whoami", timeout=20) == {
                "sid": ann.sio.get_sid(),
                "name": "ann",
            }
        finally:
            await ann.close()

    asyncio.run(scenario())


def test_cross_origin_handshake_is_refused_before_engineio(cli_server: Any) -> None:
    """flask-asgi's same-origin check applies to the upgrade as to any handshake."""
    server = cli_server(EXAMPLE, extra=["--log-level", "warning"])
    url = f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket"

    async def scenario() -> None:
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with connect(url, origin=websockets.Origin("http://evil.example")):
                pass
        assert refused.value.response.status_code == 403
        own = websockets.Origin(f"http://127.0.0.1:{server.port}")
        async with connect(url, origin=own) as ws:
            assert (await asyncio.wait_for(ws.recv(), 10)).startswith("0{")  # Engine.IO open

    asyncio.run(scenario())
    assert "Refused a cross-origin WebSocket handshake" in server.output()


def test_long_polls_do_not_hold_the_worker_pool(
    cli_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Engine.IO long-polls wait (up to the ping interval) in threads of their own: with
    twice as many polls waiting as worker threads, a sync view still answers at once,
    and an emit answers every poll. They wait by design, so the request timeout does not
    apply to them."""
    monkeypatch.setenv("FLASK_ASGI_THREADS", "4")
    monkeypatch.setenv("FLASK_ASGI_REQUEST_TIMEOUT", "0.5")
    server = cli_server(EXAMPLE, extra=["--log-level", "warning"])

    async def session(http: httpx.AsyncClient) -> str:
        handshake = await http.get("/socket.io/?EIO=4&transport=polling")
        sid = json.loads(handshake.text[1:])["sid"]  # "0{...}": Engine.IO's open packet
        query = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
        await http.post(query, content='40{"name":"p"}')  # Socket.IO connect
        assert "welcome" in (await http.get(query)).text
        return query

    async def scenario() -> None:
        limits = httpx.Limits(max_connections=20)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=20, limits=limits) as http:
            queries = [await session(http) for _ in range(8)]
            polls = [asyncio.create_task(http.get(query)) for query in queries]
            await asyncio.sleep(1)
            assert not any(poll.done() for poll in polls)  # all eight wait
            started = time.monotonic()
            assert (await http.get("/")).status_code == 200
            assert time.monotonic() - started < 1
            assert (await http.post("/announce", json={"n": 2})).status_code == 200
            for poll in polls:
                assert '"announcement",{"n":2}' in (await asyncio.wait_for(poll, 10)).text

    asyncio.run(scenario())
    log = server.output()
    assert "request timeout" not in log, log


def test_long_poll_paths_are_found_through_other_middleware() -> None:
    """The middleware is found under other WSGI middleware, at a custom path, and again
    when ``app.wsgi_app`` is replaced; an app without it has none."""
    from flask import Flask
    from flask_socketio import SocketIO
    from werkzeug.middleware.proxy_fix import ProxyFix

    from flask_asgi.protocol.long_polls import LongPollPaths

    app = Flask(__name__)
    paths = LongPollPaths()
    assert not paths.match(app, "/socket.io/")
    SocketIO(app, path="/rt/io")
    assert paths.match(app, "/rt/io/") and not paths.match(app, "/socket.io/")
    app.wsgi_app = ProxyFix(app.wsgi_app)  # type: ignore[method-assign]
    assert paths.match(app, "/rt/io/") and not paths.match(app, "/rt/iox")


def test_shutdown_ends_waiting_long_polls_at_once(cli_server: Any) -> None:
    """On uvicorn, the shutdown disconnects the Engine.IO sessions when it starts, as it
    closes WebSockets with 1001: a waiting long-poll answers with Engine.IO's close instead
    of holding the shutdown until the graceful timeout (10 s) cuts it with an error."""
    server = cli_server(EXAMPLE, extra=["--log-level", "warning"])

    async def scenario() -> None:
        polling, socket = Client(), Client()
        await polling.connect(server.base_url, "p", transports=["polling"])
        await socket.connect(server.base_url, "s")
        await asyncio.sleep(0.5)  # the polling client's next long-poll is waiting
        started = time.monotonic()
        await asyncio.to_thread(server.stop)
        assert time.monotonic() - started < 5
        for client in (polling, socket):
            for _ in range(50):
                if not client.sio.connected:
                    break
                await asyncio.sleep(0.1)
            assert not client.sio.connected

    asyncio.run(scenario())
    log = server.output()
    assert "Traceback" not in log and "rror" not in log, log


def test_an_eventlet_or_gevent_mode_is_named(caplog: pytest.LogCaptureFixture) -> None:
    """Flask-SocketIO picks eventlet or gevent when installed; flask-asgi cannot give their
    WebSocket handlers a socket, and says so on the first request, naming the fix."""
    from flask import Flask
    from flask_socketio import SocketIO

    import flask_asgi

    app = Flask(__name__)
    socketio_ = SocketIO(app)
    flask_asgi.ASGI(app)
    # What SocketIO(app) chooses when eventlet is installed (it is not, in this venv).
    socketio_.server.eio.async_mode = "eventlet"
    with caplog.at_level(logging.WARNING, logger="flask_asgi"):
        assert app.test_client().get("/socket.io/?EIO=4&transport=polling").status_code
        app.test_client().get("/")
    [record] = [r for r in caplog.records if "mode" in r.getMessage()]
    assert "'eventlet' mode" in record.getMessage()
    assert "async_mode='threading'" in record.getMessage()


def test_emits_cross_processes_through_flask_socketios_message_queue(
    cli_server: Any, redis_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``SocketIO(app, message_queue="redis://...")``: an emit from a view of one
    ``flask serve`` process reaches a client connected to another, and so does a broadcast
    from a client of the other process."""
    monkeypatch.setenv("SOCKETIO_MESSAGE_QUEUE", redis_server.url)
    one = cli_server(EXAMPLE, extra=["--log-level", "warning"])
    two = cli_server(EXAMPLE, extra=["--log-level", "warning"])

    async def scenario() -> None:
        ann, bob = Client(), Client()
        try:
            await ann.connect(one.base_url, "ann")
            await bob.connect(two.base_url, "bob")
            assert (await ann.next())[0] == (await bob.next())[0] == "welcome"
            async with httpx.AsyncClient(timeout=20) as http:
                pids = {
                    (await http.get(server.base_url + "/")).json()["pid"] for server in (one, two)
                }
                assert len(pids) == 2
                await http.post(two.base_url + "/announce", json={"from": "two"})
            assert await ann.next() == ("announcement", {"from": "two"})
            assert await bob.next() == ("announcement", {"from": "two"})
            await ann.sio.send("hello")
            assert await bob.next() == ("message", "ann: hello")
        finally:
            await ann.close()
            await bob.close()

    asyncio.run(scenario())


def test_a_hundred_clients_broadcast_while_a_sync_view_answers(cli_server: Any) -> None:
    """100 clients on the WebSocket transport each send one message that every client
    receives (10,000 deliveries), while a sync Flask view answers within a second."""
    server = cli_server(EXAMPLE, extra=["--log-level", "warning"])
    count = 100

    async def scenario() -> None:
        clients = [Client() for _ in range(count)]
        try:
            await asyncio.gather(
                *(client.connect(server.base_url, f"c{n}") for n, client in enumerate(clients))
            )
            for client in clients:
                assert (await client.next())[0] == "welcome"
            async with httpx.AsyncClient(base_url=server.base_url, timeout=20) as http:
                await asyncio.gather(*(client.sio.send("hi") for client in clients))
                started = time.monotonic()
                assert (await http.get("/")).status_code == 200
                assert time.monotonic() - started < 1
            for client in clients:
                for _ in range(count):
                    event, text = await client.next()
                    assert event == "message" and text.endswith(": hi")
        finally:
            await asyncio.gather(*(client.close() for client in clients))

    asyncio.run(scenario())


def test_proxyfix_over_flask_socketio_applies_to_the_origin_check() -> None:
    """``ProxyFix`` put on after ``SocketIO(app)`` wraps engineio's middleware, which
    flask-asgi cannot look inside: the layers above it still give the origin check the
    public origin, so a browser behind the proxy connects and a foreign page does not."""
    from flask import Flask
    from flask_socketio import SocketIO
    from werkzeug.middleware.proxy_fix import ProxyFix

    import flask_asgi
    from flask_asgi.testing import WebSocketRejected

    app = Flask(__name__)
    SocketIO(app)
    app.wsgi_app = ProxyFix(app.wsgi_app, x_proto=1, x_host=1)  # type: ignore[method-assign]
    flask_asgi.ASGI(app)
    client = app.test_client()
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "public.example"}
    query = "EIO=4&transport=websocket"
    with client.websocket(
        "/socket.io/", query_string=query, headers=forwarded, origin="https://public.example"
    ) as ws:
        assert ws.receive(timeout=10).startswith("0{")  # Engine.IO's open packet
    with pytest.raises(WebSocketRejected) as refused:
        with client.websocket(
            "/socket.io/", query_string=query, headers=forwarded, origin="https://evil.example"
        ):
            pass
    assert refused.value.status_code == 403
