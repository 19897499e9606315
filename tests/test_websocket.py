"""WebSocket routes: routing, Flask's contexts and hooks, handshake rejection, sync and async
handlers, close codes, limits, disconnects, and a real uvicorn server."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import greenlet
import helpers
import pytest
import websockets
from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    g,
    request,
    session,
    url_for,
)
from websockets.asyncio.client import connect

import flask_asgi
from flask_asgi import WebSocketDisconnect, websocket
from flask_asgi.protocol.websocket import run_connection as _run_connection
from flask_asgi.testing import WebSocketRejected


def wait_for(predicate: Callable[[], bool], timeout: float = 20) -> bool:
    return helpers.wait_for(predicate, timeout)


async def eventually(predicate: Callable[[], bool], timeout: float = 20) -> bool:
    """``wait_for`` for async tests: poll without blocking the loop."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


class Events(helpers.Events):
    """A thread-safe record of what the app saw, with counts."""

    def count(self, item: Any) -> int:
        with self.lock:
            return self.items.count(item)


@pytest.fixture
def events(app: Flask) -> Events:
    events = Events()

    @app.teardown_request
    def teardown(exc: BaseException | None) -> None:
        events.add(("teardown", request.path, type(exc).__name__ if exc else None))

    return events


# -- routing -------------------------------------------------------------------------------


def test_echo_async_handler(app: Flask, asgi: flask_asgi.ASGI, client: Any) -> None:
    @asgi.websocket("/echo")
    async def echo() -> None:
        async for message in websocket:
            await websocket.send(message)

    with client.websocket("/echo") as ws:
        ws.send("hello")
        assert ws.receive() == "hello"
        ws.send(b"\x00\x01")
        assert ws.receive() == b"\x00\x01"
    assert ws.close_code == 1000


def test_echo_sync_handler_runs_in_a_worker(app: Flask, asgi: flask_asgi.ASGI, client: Any) -> None:
    @asgi.websocket("/echo")
    def echo() -> None:
        assert threading.current_thread().name.startswith("flask-asgi-worker")
        websocket.accept()
        for message in websocket:  # blocking calls in a sync handler
            websocket.send(message * 2)
        assert websocket.close_code == 1000

    with client.websocket("/echo") as ws:
        ws.send("ab")
        assert ws.receive() == "abab"
        ws.send(b"x")
        assert ws.receive() == b"xx"


async def test_async_client(app: Flask, asgi: flask_asgi.ASGI) -> None:
    @asgi.websocket("/json")
    async def json_socket() -> None:
        data = await websocket.receive_json()
        await websocket.send_json({"got": data, "app": current_app.name})

    async with asgi.test_client() as client:
        async with client.websocket("/json") as ws:
            await ws.send_json({"n": 1})
            assert await ws.receive_json() == {"got": {"n": 1}, "app": app.name}
            with pytest.raises(WebSocketDisconnect) as closed:
                await ws.receive()  # the handler returned: closed normally
            assert closed.value.code == 1000
        assert ws.close_code == 1000


def test_url_converters_and_url_for(app: Flask, asgi: flask_asgi.ASGI, client: Any) -> None:
    @asgi.websocket("/rooms/<int:room>/ws")
    async def room_socket(room: int) -> None:
        await websocket.send_json(
            {
                "room": room,
                "self": url_for("room_socket", room=room, _external=True),
                "http": url_for("page", _external=True),
                "url": websocket.url,
                "path": websocket.path,
            }
        )

    @app.get("/page")
    def page() -> str:
        return url_for("room_socket", room=7, _external=True)

    assert client.get("/page").text == "ws://localhost/rooms/7/ws"
    with client.websocket("/rooms/42/ws") as ws:
        assert ws.receive_json() == {
            "room": 42,
            "self": "ws://localhost/rooms/42/ws",
            "http": "http://localhost/page",
            "url": "ws://localhost/rooms/42/ws",
            "path": "/rooms/42/ws",
        }
    with client.websocket("/rooms/7/ws", base_url="https://example.com") as ws:
        assert ws.receive_json()["self"] == "wss://example.com/rooms/7/ws"

    # Routing mismatches are Werkzeug's: an HTTP request to a WebSocket route is a 400,
    # and so is a handshake to an HTTP route; an unknown path is a 404.
    assert client.get("/rooms/1/ws").status_code == 400
    with pytest.raises(WebSocketRejected) as http_route:
        with client.websocket("/page"):
            pass
    assert http_route.value.status_code == 400
    with pytest.raises(WebSocketRejected) as missing:
        with client.websocket("/rooms/x/ws"):
            pass
    assert missing.value.status_code == 404


def test_blueprint_route_hooks_and_url_values(
    app: Flask, asgi: flask_asgi.ASGI, client: Any
) -> None:
    bp = Blueprint("chat", __name__, url_prefix="/<lang>/chat")

    @bp.url_value_preprocessor
    def pull_lang(endpoint: str | None, values: dict[str, Any] | None) -> None:
        g.lang = values.pop("lang") if values else None

    @bp.url_defaults
    def add_lang(endpoint: str, values: dict[str, Any]) -> None:
        values.setdefault("lang", g.lang)

    @bp.before_request
    def only_members() -> Any:
        if request.args.get("member") != "yes":
            return "members only", 403
        return None

    @flask_asgi.websocket_route(bp, "/ws", endpoint="socket")
    async def socket() -> None:
        await websocket.send(f"{g.lang} {request.endpoint} {url_for('.socket', _external=True)}")

    app.register_blueprint(bp)

    with client.websocket("/fr/chat/ws?member=yes") as ws:
        assert ws.receive() == "fr chat.socket ws://localhost/fr/chat/ws"
    with pytest.raises(WebSocketRejected) as refused:
        with client.websocket("/fr/chat/ws"):
            pass
    assert refused.value.status_code == 403
    assert refused.value.response.text == "members only"


def test_plain_route_with_websocket_flag(app: Flask, asgi: flask_asgi.ASGI, client: Any) -> None:
    @app.route("/plain", websocket=True)
    async def plain() -> None:
        await websocket.send("plain")

    with client.websocket("/plain") as ws:
        assert ws.receive() == "plain"


# -- Flask's contexts ----------------------------------------------------------------------


def test_request_session_g_and_teardown(
    app: Flask, asgi: flask_asgi.ASGI, client: Any, events: Events
) -> None:
    app.secret_key = "test"

    @app.post("/login")
    def login() -> str:
        session["user"] = request.form["user"]
        return "ok"

    @app.before_request
    def load_user() -> None:
        g.user = session.get("user")

    @asgi.websocket("/me")
    async def me() -> None:
        await websocket.send_json(
            {
                "user": g.user,
                "token": request.headers.get("X-Token"),
                "args": websocket.args.get("q"),
                "cookie": "session" in websocket.cookies,
                "method": request.method,
                "is_ws": request.url_rule is not None and request.url_rule.websocket,
            }
        )

    client.post("/login", data={"user": "ann"})
    with client.websocket("/me?q=1", headers={"X-Token": "t0k"}) as ws:
        assert ws.receive_json() == {
            "user": "ann",
            "token": "t0k",
            "args": "1",
            "cookie": True,
            "method": "GET",
            "is_ws": True,
        }
    assert wait_for(lambda: ("teardown", "/me", None) in events)


def test_sync_helper_awaits_inside_an_async_handler(
    app: Flask, asgi: flask_asgi.ASGI, client: Any
) -> None:
    def read_upper() -> str:  # sync code called by the async handler, in its greenlet
        text: str = flask_asgi.await_(websocket.receive())
        return text.upper()

    @asgi.websocket("/upper")
    async def upper() -> None:
        await websocket.send(read_upper())

    with client.websocket("/upper") as ws:
        ws.send("shout")
        assert ws.receive() == "SHOUT"


def test_websocket_proxy_outside_a_connection() -> None:
    with pytest.raises(RuntimeError, match="outside of a WebSocket connection"):
        websocket.receive()


# -- accepting and refusing the handshake --------------------------------------------------


def test_accept_with_subprotocol_and_headers(
    app: Flask, asgi: flask_asgi.ASGI, client: Any
) -> None:
    @asgi.websocket("/proto")
    async def proto() -> None:
        await websocket.accept(subprotocol=websocket.subprotocols[-1], headers={"X-Extra": "1"})
        await websocket.send(",".join(websocket.subprotocols))

    with client.websocket("/proto", subprotocols=["chat.v1", "chat.v2"]) as ws:
        assert ws.receive() == "chat.v1,chat.v2"
        assert ws.accepted_subprotocol == "chat.v2"
        assert ws.accept_headers["X-Extra"] == "1"


@pytest.mark.parametrize("http_response", [True, False])
def test_rejections(
    app: Flask, asgi: flask_asgi.ASGI, client: Any, events: Events, http_response: bool
) -> None:
    @app.before_request
    def check_token() -> None:
        if request.args.get("token") != "good":
            abort(401)

    @app.errorhandler(401)
    def unauthorized(error: Exception) -> Any:
        return {"error": "login first"}, 401

    @app.after_request
    def tag(response: Any) -> Any:
        response.headers["X-Tagged"] = "yes"
        return response

    @asgi.websocket("/guarded")
    async def guarded() -> Any:
        if request.args.get("teapot"):
            return "short and stout", 418  # a response before accept refuses the handshake
        if request.args.get("silent"):
            return None  # neither accepted nor refused: 403
        await websocket.send("welcome")
        return None

    def rejected(url: str) -> WebSocketRejected:
        with pytest.raises(WebSocketRejected) as info:
            with client.websocket(url, http_response=http_response):
                pytest.fail("the handshake should be refused")
        return info.value

    no_token = rejected("/guarded")
    teapot = rejected("/guarded?token=good&teapot=1")
    silent = rejected("/guarded?token=good&silent=1")
    if http_response:  # the server has the websocket.http.response extension (uvicorn does)
        assert no_token.status_code == 401
        assert no_token.response.json == {"error": "login first"}
        assert no_token.response.headers["X-Tagged"] == "yes"  # after_request hooks ran
        assert teapot.status_code == 418
        assert teapot.response.text == "short and stout"
    else:  # websocket.close before accept: the server answers 403
        assert no_token.status_code == teapot.status_code == 403
        assert no_token.response.data == b""
    assert silent.status_code == 403

    with client.websocket("/guarded?token=good", http_response=http_response) as ws:
        assert ws.receive() == "welcome"
    assert wait_for(lambda: events.count(("teardown", "/guarded", None)) == 4)


def test_rejection_sets_cookies(app: Flask, asgi: flask_asgi.ASGI, client: Any) -> None:
    app.secret_key = "test"

    @asgi.websocket("/visit")
    async def visit() -> Any:
        if "seen" not in session:
            session["seen"] = True
            return "come back", 409
        await websocket.send("seen before")
        return None

    with pytest.raises(WebSocketRejected):
        with client.websocket("/visit"):
            pass
    with client.websocket("/visit") as ws:  # the rejection's session cookie was kept
        assert ws.receive() == "seen before"


def test_exception_before_accept_is_a_500(app: Flask, asgi: flask_asgi.ASGI, client: Any) -> None:
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @asgi.websocket("/broken")
    async def broken() -> None:
        raise ValueError("boom")

    with pytest.raises(WebSocketRejected) as info:
        with client.websocket("/broken"):
            pass
    assert info.value.status_code == 500

    app.config["PROPAGATE_EXCEPTIONS"] = True  # as in testing: the test sees the error
    with pytest.raises(ValueError, match="boom"):
        with client.websocket("/broken"):
            pass


# -- closing -------------------------------------------------------------------------------


def test_handler_closes_with_code_and_reason(
    app: Flask, asgi: flask_asgi.ASGI, client: Any
) -> None:
    @asgi.websocket("/bye")
    async def bye() -> None:
        await websocket.send("bye")
        await websocket.close(4001, "go away")
        with pytest.raises(WebSocketDisconnect):
            await websocket.send("too late")

    with client.websocket("/bye") as ws:
        assert ws.receive() == "bye"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive()
        assert (closed.value.code, closed.value.reason) == (4001, "go away")
    assert ws.close_code == 4001


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_client_close_reaches_the_handler(
    app: Flask, asgi: flask_asgi.ASGI, client: Any, events: Events, kind: str
) -> None:
    if kind == "async":

        @asgi.websocket("/listen")
        async def listen() -> None:
            try:
                while True:
                    events.add(("message", await websocket.receive()))
            except WebSocketDisconnect as exc:
                events.add(("disconnect", exc.code, exc.reason))
                raise

    else:

        @asgi.websocket("/listen")
        def listen() -> None:
            try:
                while True:
                    events.add(("message", websocket.receive()))
            except WebSocketDisconnect as exc:
                events.add(("disconnect", exc.code, exc.reason))
                raise

    with client.websocket("/listen") as ws:
        ws.send("one")
        ws.close(4000, "done")  # waits for the handler to finish
    assert ("message", "one") in events
    assert ("disconnect", 4000, "done") in events
    assert ("teardown", "/listen", "WebSocketDisconnect") in events


def test_disconnect_cancels_an_async_handler_waiting_elsewhere(
    app: Flask, asgi: flask_asgi.ASGI, client: Any, events: Events
) -> None:
    @asgi.websocket("/wait")
    async def wait() -> None:
        await websocket.accept()
        try:
            await asyncio.Event().wait()  # not reading the socket
        except asyncio.CancelledError:
            events.add("cancelled")
            raise

    with client.websocket("/wait") as ws:
        ws.close(1001)
    assert "cancelled" in events
    assert ("teardown", "/wait", "WebSocketDisconnect") in events


def test_error_after_accept_closes_1011(
    app: Flask, asgi: flask_asgi.ASGI, client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    @asgi.websocket("/fail")
    async def fail() -> None:
        await websocket.send("about to fail")
        raise ValueError("handler bug")

    # TESTING propagates the error to the test, as Flask's client does for requests.
    with pytest.raises(ValueError, match="handler bug"):
        with client.websocket("/fail") as ws:
            assert ws.receive() == "about to fail"
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive()
            assert closed.value.code == 1011

    app.config["PROPAGATE_EXCEPTIONS"] = False  # production: logged, connection closed
    with caplog.at_level(logging.ERROR):
        with client.websocket("/fail") as ws:
            ws.receive()
            with pytest.raises(WebSocketDisconnect):
                ws.receive()
    assert ws.close_code == 1011
    assert "handler bug" in caplog.text


def test_abort_after_accept_closes_1008(app: Flask, asgi: flask_asgi.ASGI, client: Any) -> None:
    @asgi.websocket("/strict")
    async def strict() -> None:
        if await websocket.receive() != "password":
            abort(403)
        await websocket.send("in")

    with client.websocket("/strict") as ws:
        ws.send("guess")
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive()
        assert closed.value.code == 1008


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_receive_timeout(app: Flask, asgi: flask_asgi.ASGI, client: Any, kind: str) -> None:
    async def async_handler() -> None:
        try:
            await websocket.receive(timeout=0.05)
        except TimeoutError:
            await websocket.send("timed out")
        await websocket.send(await websocket.receive(timeout=30))

    def sync_handler() -> None:
        try:
            websocket.receive(timeout=0.05)
        except TimeoutError:
            websocket.send("timed out")
        websocket.send(websocket.receive_json(timeout=30)["text"])

    asgi.websocket("/slow")(async_handler if kind == "async" else sync_handler)
    with client.websocket("/slow") as ws:
        assert ws.receive() == "timed out"  # the connection is still open
        if kind == "sync":
            ws.send_json({"text": "late"})
        else:
            ws.send("late")
        assert ws.receive() == "late"


# -- limits --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_oversized_message_closes_1009(
    app: Flask, asgi: flask_asgi.ASGI, client: Any, events: Events, kind: str
) -> None:
    app.config["FLASK_ASGI_WEBSOCKET_MAX_MESSAGE"] = 10

    async def async_handler() -> None:
        try:
            while True:
                await websocket.send(await websocket.receive())
        except WebSocketDisconnect as exc:
            events.add(("closed", exc.code))

    def sync_handler() -> None:
        try:
            while True:
                websocket.send(websocket.receive())
        except WebSocketDisconnect as exc:
            events.add(("closed", exc.code))

    asgi.websocket("/limited")(async_handler if kind == "async" else sync_handler)

    with client.websocket("/limited") as ws:
        ws.send("0123456789")  # 10 bytes: fine
        assert ws.receive() == "0123456789"
        ws.send("é" * 6)  # 6 characters, 12 bytes of UTF-8
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive()
    assert closed.value.code == ws.close_code == 1009
    assert wait_for(lambda: ("closed", 1009) in events)


def test_idle_timeout_closes_1001(
    app: Flask, asgi: flask_asgi.ASGI, client: Any, events: Events
) -> None:
    app.config["FLASK_ASGI_WEBSOCKET_IDLE_TIMEOUT"] = 1.0

    @asgi.websocket("/chatty")
    async def chatty() -> None:
        async for message in websocket:
            await websocket.send(message)
        events.add(("loop ended", websocket.close_code))

    @asgi.websocket("/quiet")
    async def quiet() -> None:
        await websocket.accept()
        await asyncio.Event().wait()  # cancelled when the idle timeout closes the socket

    with client.websocket("/chatty") as ws:
        for _ in range(6):  # activity keeps it open past the timeout
            time.sleep(0.25)
            ws.send("ping")
            assert ws.receive() == "ping"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive()
    assert closed.value.code == 1001
    assert ("loop ended", 1001) in events

    with client.websocket("/quiet") as ws:
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive()
    assert closed.value.code == 1001
    assert wait_for(lambda: ("teardown", "/quiet", "WebSocketDisconnect") in events)


# -- a real server -------------------------------------------------------------------------


async def test_real_server(app: Flask, asgi: flask_asgi.ASGI, live_server: Any) -> None:
    @app.before_request
    def guard() -> None:
        if request.args.get("token") != "good":
            abort(401, "token please")

    @asgi.websocket("/ws/<room>")
    async def room(room: str) -> None:
        await websocket.accept(subprotocol="chat")
        await websocket.send(url_for("room", room=room, token="good", _external=True))
        async for message in websocket:
            await websocket.send(f"{room}: {message!s}")
        # never reached for the close below: the handler closes first

    @asgi.websocket("/sync")
    def sync_room() -> None:
        message = websocket.receive()
        websocket.send(message[::-1])
        websocket.close(4004, "done")

    base = live_server(asgi).replace("http://", "ws://")
    async with connect(base + "/ws/blue?token=good", subprotocols=["chat"]) as ws:
        assert ws.subprotocol == "chat"
        assert await ws.recv() == base + "/ws/blue?token=good"
        await ws.send("hi")
        assert await ws.recv() == "blue: hi"
        await ws.send(b"bin")
        assert await ws.recv() == "blue: b'bin'"

    async with connect(base + "/sync?token=good") as ws:
        await ws.send("abc")
        assert await ws.recv() == "cba"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4004, "done")

    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(base + "/ws/blue"):
            pass
    assert refused.value.response.status_code == 401
    assert b"token please" in refused.value.response.body


def _greenlets_in_connections() -> int:
    """Greenlets still inside a WebSocket connection's pipeline (idle pooled greenlets,
    which flask-asgi keeps for reuse, are not counted)."""
    gc.collect()
    busy = 0
    for obj in gc.get_objects():
        # type(), not isinstance(): isinstance() on a weakref.proxy whose object is gone
        # (Flask's JSON provider holds one to its app) raises ReferenceError.
        if issubclass(type(obj), greenlet.greenlet) and not obj.dead:
            frame = obj.gr_frame
            while frame is not None:
                if frame.f_code is _run_connection.__code__:
                    busy += 1
                    break
                frame = frame.f_back
    return busy


async def test_dropped_connections_leak_nothing(
    app: Flask, asgi: flask_asgi.ASGI, live_server: Any, events: Events
) -> None:
    active = set()
    lock = threading.Lock()

    @asgi.websocket("/hold/<int:n>")
    async def hold(n: int) -> None:
        with lock:
            active.add(n)
        try:
            await websocket.send("ready")
            if n % 2:
                await asyncio.Event().wait()  # waiting elsewhere: cancelled on disconnect
            else:
                async for _ in websocket:  # reading: the loop ends on disconnect
                    pass
        finally:
            with lock:
                active.discard(n)

    base = live_server(asgi).replace("http://", "ws://")
    async with connect(base + "/hold/0") as ws:  # warm up
        await ws.recv()
    assert await eventually(lambda: not active)
    threads = set(threading.enumerate())

    count = 200
    sockets = []
    for batch in range(0, count, 50):
        opened = await asyncio.gather(
            *(connect(f"{base}/hold/{n}", open_timeout=30) for n in range(batch, batch + 50))
        )
        sockets += opened
        await asyncio.gather(*(ws.recv() for ws in opened))
    assert len(active) == count
    assert _greenlets_in_connections() == count  # each connection is parked in its greenlet
    for ws in sockets:
        ws.transport.abort()  # drop the TCP connection: no close frame
    assert await eventually(lambda: not active), f"{len(active)} still held"
    assert await eventually(lambda: sum(1 for e in events.items if e[0] == "teardown") == count + 1)
    assert _greenlets_in_connections() == 0
    assert set(threading.enumerate()) <= threads  # async handlers start no thread
