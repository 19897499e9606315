"""The server matrix: one end-to-end set run against every ASGI server flask-asgi supports.

Each server is a real subprocess (``tests/server_matrix_app.py``) on a real socket, reused
by all of that server's cases; the SIGTERM case starts a fresh one, since it stops it.
Where a server lacks a feature, the case asserts what that server documents instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio
from helpers import VENV_BIN, free_port, open_non_readers, wait_for
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

TESTS = Path(__file__).resolve().parent
APP = "server_matrix_app:asgi"
GRACE = "10"  # seconds each server lets in-flight requests finish on SIGTERM


def _gunicorn_has_asgi_worker() -> bool:
    try:
        from gunicorn.workers import SUPPORTED_WORKERS
    except ImportError:
        return False
    return "asgi" in SUPPORTED_WORKERS


@dataclasses.dataclass(frozen=True)
class Server:
    name: str
    argv: Callable[[int], list[str]]
    #: The client speaks HTTP/2 with prior knowledge (h2c), not HTTP/1.1.
    http2: bool = False
    #: The server offers the ``websocket.http.response`` extension: a refused handshake
    #: gets the app's own response; without it the server answers 403 (ASGI spec).
    ws_http_response: bool = True
    #: The exit status after a graceful SIGTERM: uvicorn re-raises the signal it caught
    #: once it has shut down (so the process ends "killed by SIGTERM", -15).
    sigterm_status: int = 0


def _uvicorn(http: str, ws: str) -> Callable[[int], list[str]]:
    return lambda port: [
        sys.executable, "-m", "uvicorn", APP, "--host", "127.0.0.1", "--port", str(port),
        "--http", http, "--ws", ws, "--lifespan", "on", "--log-level", "warning",
        "--timeout-graceful-shutdown", GRACE,
    ]  # fmt: skip


def _hypercorn(port: int) -> list[str]:
    return [
        str(VENV_BIN / "hypercorn"), APP, "--bind", f"127.0.0.1:{port}",
        "--graceful-timeout", GRACE, "--log-level", "warning",
    ]  # fmt: skip


def _gunicorn(worker: str) -> Callable[[int], list[str]]:
    return lambda port: [
        str(VENV_BIN / "gunicorn"), APP, "-k", worker, "-w", "1", "-b", f"127.0.0.1:{port}",
        "--graceful-timeout", GRACE, "--log-level", "warning",
    ]  # fmt: skip


def _granian(port: int) -> list[str]:
    return [
        str(VENV_BIN / "granian"), "--interface", "asgi", "--host", "127.0.0.1",
        "--port", str(port), "--log-level", "warning", "--workers-kill-timeout", GRACE, APP,
    ]  # fmt: skip


SERVERS = [
    Server("uvicorn-httptools", _uvicorn("httptools", "websockets-sansio"), sigterm_status=-15),
    Server("uvicorn-h11", _uvicorn("h11", "wsproto"), sigterm_status=-15),
    Server("granian", _granian),
    Server("hypercorn", _hypercorn),
    Server("hypercorn-h2", _hypercorn, http2=True),
    Server("gunicorn-uvicorn-worker", _gunicorn("uvicorn_worker.UvicornWorker")),
    # flask-asgi's worker class: uvicorn-worker's with GracefulServer (the zero-loss shutdown).
    Server("gunicorn-flask-asgi", _gunicorn("flask_asgi.gunicorn.Worker")),
]
if _gunicorn_has_asgi_worker():
    SERVERS.append(Server("gunicorn-asgi", _gunicorn("asgi"), ws_http_response=False))


class Running:
    """A server process serving the matrix app; its log and lifespan marker in ``tmp``."""

    def __init__(self, spec: Server, tmp: Path) -> None:
        self.spec = spec
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.marker = tmp / f"{spec.name}.marker"
        self.log_path = tmp / f"{spec.name}.log"
        env = dict(os.environ, MATRIX_MARKER=str(self.marker), PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            spec.argv(self.port), cwd=TESTS, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )

    def client(self, **options: Any) -> httpx.Client:
        if self.spec.http2:
            options.update(http1=False, http2=True)
        options.setdefault("timeout", 30)
        return httpx.Client(base_url=self.base_url, **options)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.spec.name} exited early:\n{self.output()}")
            try:
                if httpx.get(self.base_url + "/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.spec.name} did not start:\n{self.output()}")

    def marks(self) -> list[str]:
        return self.marker.read_text().split() if self.marker.exists() else []

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


@pytest.fixture(scope="module", params=SERVERS, ids=lambda spec: spec.name)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    running = Running(request.param, tmp_path_factory.mktemp("servers"))
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def test_async_and_sync_views(server: Running) -> None:
    with server.client() as client:
        response = client.get("/async")
        assert response.json() == {"kind": "async", "on_serving_loop": True}
        assert response.http_version == ("HTTP/2" if server.spec.http2 else "HTTP/1.1")
        data = client.get("/sync").json()
        assert data["kind"] == "sync" and data["thread"].startswith("flask-asgi-worker")


def test_lifespan_startup_ran_once_before_requests(server: Running) -> None:
    # before_serving recorded the loop that /async then runs on (see the test above).
    assert server.marks().count("started") == 1
    assert "stopped" not in server.marks()


@pytest.mark.parametrize("path", ["/echo-async", "/echo-sync"])
def test_request_bodies(server: Running, path: str) -> None:
    body = os.urandom(1024 * 1024 + 7)  # many http.request messages on every server
    expected = {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}

    def chunked() -> Iterator[bytes]:  # no Content-Length: Transfer-Encoding: chunked
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    with server.client() as client:
        assert client.post(path, content=body).json() == expected
        assert client.post(path, content=chunked()).json() == expected
        assert client.post(path).json() == {"length": 0, "sha256": hashlib.sha256().hexdigest()}


@pytest.mark.parametrize("path", ["/stream-sync", "/stream-async"])
def test_streamed_responses(server: Running, path: str) -> None:
    with server.client() as client, client.stream("GET", path) as response:
        assert response.status_code == 200
        assert "content-length" not in response.headers
        chunks = list(response.iter_bytes())
    assert b"".join(chunks) == "".join(f"{i:03d}|" for i in range(100)).encode()


def test_a_large_file(server: Running) -> None:
    """send_file's 5 MB arrive whole (granian reads the file itself: pathsend)."""
    with server.client() as client:
        response = client.get("/big-file")
    assert response.status_code == 200
    assert response.content == b"x" * 5 * 1024 * 1024


def test_clients_that_do_not_read_hold_no_worker_thread(server: Running) -> None:
    """45 clients (more than the 40 worker threads) GET a 5 MB file and never read: the loop
    holds their responses, so a sync view and a 404 still answer at once (issue 20)."""
    with contextlib.ExitStack() as stack:
        open_non_readers(server.base_url, "/big-file", 45, stack)
        time.sleep(1)  # each has taken its thread and filled what it may
        with server.client(timeout=5) as client:
            started = time.monotonic()
            assert client.get("/sync").status_code == 200
            assert client.get("/missing").status_code == 404
            assert time.monotonic() - started < 5


def test_server_sent_events(server: Running) -> None:
    with server.client() as client, client.stream("GET", "/sse") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    events = [block for block in text.split("\n\n") if block.startswith("event:")]
    assert [json.loads(e.split("data: ")[1]) for e in events] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert [e.split("id: ")[1].split("\n")[0] for e in events] == ["0", "1", "2"]


@pytest.mark.parametrize(
    ("path", "code", "reason"),
    [
        ("/ws/echo", 4001, "bye"),
        ("/ws/echo-sync", 4002, "bye-sync"),
        ("/ws/flask-sock", 4003, "bye-sock"),  # an unchanged Flask-Sock route
    ],
)
def test_websocket_echo_and_close_code(server: Running, path: str, code: int, reason: str) -> None:
    with connect(f"ws://127.0.0.1:{server.port}{path}", open_timeout=30) as ws:
        ws.send("hello")
        assert ws.recv(timeout=30) == "hello"
        ws.send(b"\x00\xffbinary")
        assert ws.recv(timeout=30) == b"\x00\xffbinary"
        ws.send("close")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (code, reason)


def test_refused_websocket_handshake(server: Running) -> None:
    with pytest.raises(InvalidStatus) as refused:
        with connect(f"ws://127.0.0.1:{server.port}/ws/refused", open_timeout=30):
            pass
    response = refused.value.response
    if server.spec.ws_http_response:  # the app's own answer reaches the client
        assert (response.status_code, response.body) == (401, b"no entry")
        assert response.headers["X-Refused"] == "yes"
    else:  # the server closes before accept: ASGI says 403
        assert response.status_code == 403


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_unchanged_flask_socketio(server: Running, transport: str) -> None:
    """Flask-SocketIO's threading mode, unchanged, on each server: a sync handler's ack
    with ``request.sid`` and ``session``, a broadcast, and an emit from a sync view."""
    asyncio.run(_socketio_round(server.base_url, transport))


async def _socketio_round(base_url: str, transport: str) -> None:
    received: dict[str, asyncio.Queue[tuple[str, Any]]] = {}
    clients = {}
    for name in ("ann", "bob"):
        client = socketio.AsyncClient(reconnection=False)
        queue = received[name] = asyncio.Queue()
        for event in ("shouted", "announced"):
            client.on(event, lambda data, event=event, queue=queue: queue.put_nowait((event, data)))
        await client.connect(base_url, transports=[transport], auth={"name": name}, wait_timeout=20)
        clients[name] = client
    try:
        ann = clients["ann"]
        ack = await ann.call("echo", {"n": 1}, timeout=20)
        assert ack == {"data": {"n": 1}, "sid": ann.get_sid(), "name": "ann", "thread": True}
        await ann.emit("shout", "hi")
        for queue in received.values():
            assert await asyncio.wait_for(queue.get(), 20) == ("shouted", "hi")
        async with httpx.AsyncClient(base_url=base_url, timeout=20) as http:
            answer = await http.post("/sio/announce", json={"from": "view"})
        assert (answer.status_code, answer.text) == (200, "sent")
        for queue in received.values():
            assert await asyncio.wait_for(queue.get(), 20) == ("announced", {"from": "view"})
    finally:
        for client in clients.values():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(client.disconnect(), 5)


@pytest.mark.parametrize("path", ["/slow?s=1.5", "/slow-sync?s=1.5"])
@pytest.mark.parametrize("spec", SERVERS, ids=lambda spec: spec.name)
def test_sigterm_lets_the_request_in_flight_finish(spec: Server, tmp_path: Path, path: str) -> None:
    running = Running(spec, tmp_path)
    try:
        running.wait_ready()
        result: dict[str, Any] = {}

        def call() -> None:
            with running.client() as client:
                try:
                    response = client.get(path)
                    result["answer"] = (response.status_code, response.text)
                except httpx.HTTPError as error:
                    result["answer"] = repr(error)

        thread = threading.Thread(target=call)
        thread.start()
        assert wait_for(lambda: "slow-started" in running.marks(), 30), running.output()
        running.proc.send_signal(signal.SIGTERM)
        thread.join(30)
        assert result.get("answer") == (200, "finished"), running.output()
        assert running.proc.wait(30) == spec.sigterm_status, running.output()
        # after_serving ran once, after the request had finished
        assert running.marks() == ["started", "slow-started", "slow-finished", "stopped"]
    finally:
        running.stop()
