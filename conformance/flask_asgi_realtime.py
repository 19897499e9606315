"""pytest plugin: run Flask-SocketIO's and Flask-Sock's own tests with flask-asgi serving the apps.

Loaded with ``-p flask_asgi_realtime`` while running the tests of the two sdists
(``conformance/realtime.py`` downloads them and runs them; nothing of them is copied here).
The upstream test modules run unchanged. What the plugin changes is where their apps run:

* Every ``Flask`` a test creates gets ``flask_asgi.ASGI`` (as ``conformance/run.py`` does
  for Flask's own suite), so ``app.test_client()`` also takes the ASGI path.
* **Flask-SocketIO**: ``SocketIO.test_client(app, ...)`` returns a :class:`ServedClient`
  instead of upstream's ``SocketIOTestClient``. Upstream's client never reaches a server: it
  calls the Socket.IO server's packet handlers in the test's thread and replaces the
  server's ``_send_packet`` to catch what it sends. The served client has the same methods
  and answers (``is_connected``, ``connect``, ``disconnect``, ``emit``, ``send``,
  ``get_received``, ``eio_sid``), but behind them is python-socketio's real ``AsyncClient``
  on the WebSocket transport, connected to the app served by flask-asgi on a real server
  (``FLASK_ASGI_REALTIME_SERVER``: uvicorn, hypercorn or granian) in this process, so the
  handlers' effects on the test module's globals are visible to the test. The request goes
  through flask-asgi's handshake, its ``werkzeug.socket`` stand-in, python-engineio's
  threading driver and simple-websocket; the app's Socket.IO server keeps its own settings
  (upstream's client turns ``async_handlers`` off; here each event still runs in a thread
  of its own).
  A network client is asynchronous where upstream's is not, so each call waits for what
  upstream's got at once: ``emit`` and ``send`` always ask for an ack and wait for it (the
  handler has then returned, and what it sent to this client arrived before the ack);
  ``get_received`` first makes a round trip on this client's connection (an event the
  plugin registers on the connected namespace, answered by an ack), so what another
  client's handler sent to it has arrived; ``disconnect`` waits until the server has run
  the disconnect handler and dropped the session's environ. The JSON dumps of
  ``request.args`` and ``request.headers`` that the suite's connect handlers send are
  compared without what any real client must send and upstream's client does not: the
  Engine.IO query parameters (``EIO``, ``transport``, ``t``) and the WebSocket handshake headers
  (``Upgrade``, ``Connection``, ``Sec-WebSocket-Key``/``-Version``, and the
  ``User-Agent``, ``Accept`` and ``Accept-Encoding`` that aiohttp adds); every other header
  and argument is kept.
* **Flask-Sock**: its tests only register routes. After each test, every app the test
  created is served, and a real WebSocket client (``websockets``) opens every
  ``websocket=True`` route: the handshake must be accepted (101) and the connection closed
  normally (1000) when the handler returns.

Tests whose subject is upstream's test client itself are skipped, each with its reason, in
:data:`EXCLUDED` (the one place). The terminal summary says how many connections went over
the network, so a run that silently bypassed the server is visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Coroutine
from typing import Any

import flask
import pytest
from werkzeug.test import EnvironBuilder

from flask_asgi import ASGI

SERVER = os.environ.get("FLASK_ASGI_REALTIME_SERVER", "uvicorn")
TRANSPORT = os.environ.get("FLASK_ASGI_REALTIME_TRANSPORT", "websocket")
TIMEOUT = 20.0
BARRIER = "flask_asgi.barrier"

#: Upstream tests that test upstream's test client, not the app: skipped, with the reason.
EXCLUDED = {
    "test_socketio.py::TestSocketIO::test_encode_decode_2": (
        "expects the TypeError raised inside a server-side handler (an emit, or an ack of "
        "a value JSON cannot encode) to come out of the test client's emit(): upstream's "
        "client runs the handler in the caller's thread. Served, the error is raised in the "
        "server's handler thread and the client gets no ack, as under Werkzeug's server"
    ),
}

#: What every real client sends and upstream's test client does not (see the docstring).
PROTOCOL_ARGS = {"EIO", "transport", "t"}
PROTOCOL_HEADERS = {
    "Upgrade",
    "Connection",
    "Sec-Websocket-Key",
    "Sec-Websocket-Version",
    "User-Agent",
    "Accept",
    "Accept-Encoding",
}

counts = {"socketio_connections": 0, "websocket_routes": 0}
_created: list[flask.Flask] = []
_asgi: dict[flask.Flask, ASGI] = {}  # keeps the apps alive: no id is reused
_original_init = flask.Flask.__init__


def _init(self: flask.Flask, *args: Any, **kwargs: Any) -> None:
    _original_init(self, *args, **kwargs)
    _asgi[self] = ASGI(self)
    _created.append(self)




# -- the servers -------------------------------------------------------------------------


class LoopThread:
    """An asyncio loop running in a daemon thread; ``run`` waits for a coroutine's result."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = TIMEOUT) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Served:
    """One app served by flask-asgi on ``SERVER`` in a thread of this process."""

    def __init__(self, app: flask.Flask) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.asgi = _asgi[app] if app in _asgi else ASGI(app)
        self.stop_event: asyncio.Event | None = None
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name=f"{SERVER}-served", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + TIMEOUT
        while not self._answers():
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{SERVER} did not start: {self.errors}")
            time.sleep(0.02)

    def _answers(self) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # reported by the start-up wait
            self.errors.append(error)

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        if SERVER == "uvicorn":
            import uvicorn

            config = uvicorn.Config(
                self.asgi, host="127.0.0.1", port=self.port, log_level="warning", log_config=None
            )
            server = uvicorn.Server(config)
            task = asyncio.ensure_future(server.serve())
            await self.stop_event.wait()
            server.should_exit = True
            await task
        elif SERVER == "hypercorn":
            from hypercorn.asyncio import serve
            from hypercorn.config import Config

            config = Config()
            config.bind = [f"127.0.0.1:{self.port}"]
            await serve(self.asgi, config, shutdown_trigger=self.stop_event.wait)  # type: ignore[arg-type]
        elif SERVER == "granian":
            from granian.constants import Interfaces
            from granian.server.embed import Server as Granian

            granian = Granian(
                self.asgi,
                address="127.0.0.1",
                port=self.port,
                interface=Interfaces.ASGI,
                log_enabled=False,
            )
            task = asyncio.ensure_future(granian.serve())
            await self.stop_event.wait()
            granian.stop()
            await task
        else:
            raise ValueError(f"FLASK_ASGI_REALTIME_SERVER={SERVER!r}: uvicorn, hypercorn, granian")

    def stop(self) -> None:
        if self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(TIMEOUT)


_served: dict[flask.Flask, Served] = {}
_clients_loop: LoopThread | None = None


def served(app: flask.Flask) -> Served:
    if app not in _served:
        _served[app] = Served(app)
    return _served[app]


def clients_loop() -> LoopThread:
    global _clients_loop
    if _clients_loop is None:
        _clients_loop = LoopThread("served-clients")
    return _clients_loop


# -- Flask-SocketIO ----------------------------------------------------------------------


def _strip_protocol(args: Any) -> Any:
    """A JSON dump of ``request.args`` or ``request.headers``, without what only a real
    client sends (the Engine.IO query parameters, the WebSocket handshake's headers)."""
    if not isinstance(args, str) or not args.startswith("{"):
        return args
    try:
        data = json.loads(args)
    except ValueError:
        return args
    if not isinstance(data, dict):
        return args
    kept = {k: v for k, v in data.items() if k not in PROTOCOL_ARGS | PROTOCOL_HEADERS}
    return args if kept == data else json.dumps(kept)


class ServedClient:
    """Upstream's ``SocketIOTestClient`` interface over a real python-socketio client."""

    def __init__(
        self,
        app: flask.Flask,
        socketio: Any,
        namespace: str | None = None,
        query_string: str | None = None,
        headers: dict[str, str] | None = None,
        auth: Any = None,
        flask_test_client: Any = None,
    ) -> None:
        import socketio as python_socketio

        self.app = app
        self.socketio = socketio
        self.flask_test_client = flask_test_client
        self.server = served(app)
        self.loop = clients_loop()
        self.sio = python_socketio.AsyncClient(reconnection=False)
        self.connected: dict[str, bool] = {}
        self.queue: list[dict[str, Any]] = []
        self.eio_sid: str | None = None
        self._waiting: dict[str, list[threading.Event]] = {}
        _live.append(self)
        self.connect(namespace=namespace, query_string=query_string, headers=headers, auth=auth)

    def _record(self, event: str, namespace: str, *args: Any) -> None:
        if event in ("message", "json"):
            self.queue.append(
                {"name": event, "args": _strip_protocol(args[0]), "namespace": namespace}
            )
        else:
            self.queue.append({"name": event, "args": list(args), "namespace": namespace})

    def _disconnected(self, namespace: str, *args: Any) -> None:
        self.connected[namespace] = False
        for event in self._waiting.pop(namespace, []):
            event.set()

    def is_connected(self, namespace: str | None = None) -> bool:
        return self.connected.get(namespace or "/", False)

    def connect(
        self,
        namespace: str | None = None,
        query_string: str | None = None,
        headers: dict[str, str] | None = None,
        auth: Any = None,
    ) -> None:
        import socketio as python_socketio

        namespace = namespace or "/"
        if self.sio.connected:
            raise NotImplementedError("one namespace per served client (the suite uses one)")
        url = self.server.base_url
        if query_string:
            url += query_string if query_string.startswith("?") else "?" + query_string
        headers = dict(headers or {})
        if self.flask_test_client is not None:
            # The cookies Flask's test client holds (a session set by a view) go along.
            environ = EnvironBuilder(path="/socket.io").get_environ()
            self.flask_test_client._add_cookies_to_wsgi(environ)
            if "HTTP_COOKIE" in environ:
                headers["Cookie"] = environ["HTTP_COOKIE"]
        self.sio.on("*", lambda event, *args: self._record(event, namespace, *args), namespace)
        self.sio.on("disconnect", lambda *args: self._disconnected(namespace), namespace)
        counts["socketio_connections"] += 1
        try:
            self.loop.run(
                self.sio.connect(
                    url,
                    headers=headers,
                    auth=auth,
                    namespaces=[namespace],
                    transports=[TRANSPORT],
                    wait_timeout=TIMEOUT,
                )
            )
        except python_socketio.exceptions.ConnectionError:
            self.connected[namespace] = False
            return
        self.eio_sid = self.sio.eio.sid
        self.connected[namespace] = True
        server = self.socketio.server
        if BARRIER not in server.handlers.get(namespace, {}):
            server.on(BARRIER, lambda sid: True, namespace=namespace)

    def disconnect(self, namespace: str | None = None) -> None:
        if not self.is_connected(namespace):
            raise RuntimeError("not connected")
        self._close()
        del self.connected[namespace or "/"]

    def _close(self) -> None:
        """Disconnect, and wait until the server has run its disconnect handlers."""
        if self.sio.connected:
            self.loop.run(self.sio.disconnect())
        environ = self.socketio.server.environ
        deadline = time.monotonic() + TIMEOUT
        while self.eio_sid in environ and time.monotonic() < deadline:
            time.sleep(0.005)
        assert self.eio_sid not in environ, "the server did not end the session"

    def _call(self, namespace: str, event: str, args: tuple[Any, ...]) -> list[Any] | None:
        """Emit with an ack and wait for it (or for the server to disconnect the namespace)."""
        done = threading.Event()
        answer: list[Any] = []

        def ack(*data: Any) -> None:
            answer.append(list(data))
            done.set()

        self._waiting.setdefault(namespace, []).append(done)
        data: Any = args[0] if len(args) == 1 else args if args else None
        self.loop.run(self.sio.emit(event, data, namespace=namespace, callback=ack))
        if not done.wait(TIMEOUT):
            raise TimeoutError(f"no ack for {event!r} in {TIMEOUT} s")
        with contextlib.suppress(ValueError):
            self._waiting.get(namespace, []).remove(done)
        return answer[0] if answer else None

    def emit(self, event: str, *args: Any, **kwargs: Any) -> Any:
        namespace = kwargs.pop("namespace", None) or "/"
        if not self.is_connected(namespace):
            raise RuntimeError("not connected")
        callback = kwargs.pop("callback", False)
        ack = self._call(namespace, event, args)
        if not callback or ack is None:
            return None
        return ack[0] if len(ack) == 1 else ack

    def send(
        self, data: Any, json: bool = False, callback: bool = False, namespace: str | None = None
    ) -> Any:
        return self.emit(
            "json" if json else "message", data, callback=callback, namespace=namespace
        )

    def get_received(self, namespace: str | None = None) -> list[dict[str, Any]]:
        if not self.is_connected(namespace):
            raise RuntimeError("not connected")
        namespace = namespace or "/"
        self._call(namespace, BARRIER, ())
        received = [pkt for pkt in self.queue if pkt["namespace"] == namespace]
        self.queue = [pkt for pkt in self.queue if pkt not in received]
        return received


_live: list[ServedClient] = []


def _served_test_client(self: Any, app: flask.Flask, **kwargs: Any) -> ServedClient:
    return ServedClient(app, self, **kwargs)


def pytest_configure(config: pytest.Config) -> None:
    """Patch Flask and Flask-SocketIO only in the pytest run that loads this plugin
    (``-p flask_asgi_realtime``): importing the module (tests/test_realtime_suites.py reads
    ``EXCLUDED``) must leave Flask as it is."""
    flask.Flask.__init__ = _init  # type: ignore[method-assign]
    with contextlib.suppress(ImportError):
        import flask_socketio

        flask_socketio.SocketIO.test_client = _served_test_client  # type: ignore[method-assign]


# -- Flask-Sock --------------------------------------------------------------------------


async def _open_and_see_close(url: str) -> int:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async with connect(url, open_timeout=TIMEOUT) as ws:
        try:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
        except ConnectionClosed as closed:
            assert closed.rcvd is not None
            return closed.rcvd.code
    raise AssertionError(f"{url}: the handler returned but the connection stayed open")


def _serve_websocket_routes(app: flask.Flask) -> None:
    routes = [rule.rule for rule in app.url_map.iter_rules() if rule.websocket]
    if not routes:
        return
    server = served(app)
    for route in routes:
        url = f"ws://127.0.0.1:{server.port}{route}"
        code = clients_loop().run(_open_and_see_close(url))
        assert code == 1000, f"{route}: closed with {code}"
        counts["websocket_routes"] += 1


# -- pytest hooks ------------------------------------------------------------------------


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        reason = EXCLUDED.get(item.nodeid)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=f"excluded under flask-asgi: {reason}"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    del _created[:]
    result = yield
    if "flask_sock" in str(item.fspath) or "flask-sock" in str(item.fspath):
        for app in list(_created):
            _serve_websocket_routes(app)
    return result


def pytest_runtest_teardown(item: pytest.Item) -> None:
    # Upstream's clients live on; served ones are closed, so each test starts with the
    # previous one's disconnect handlers done and its threads given back.
    while _live:
        client = _live.pop()
        if client.sio.connected:
            client._close()


def pytest_sessionfinish() -> None:
    for server in _served.values():
        server.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.write_line(
        f"flask-asgi on {SERVER}: {counts['socketio_connections']} Socket.IO connections, "
        f"{counts['websocket_routes']} Flask-Sock routes opened over the network"
    )
