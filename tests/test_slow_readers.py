"""Clients that request a large response and never read it hold no worker thread.

A sync view's large body (``send_file``, Flask's ``/static``, a generator) is sent by the
loop from a bounded buffer that worker threads fill only when there is room, so more
non-reading clients than threads leave every sync view answering (issue 20). The same on
granian and hypercorn: ``tests/test_servers.py``'s matrix.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import flask
import httpx
import pytest
from helpers import http_scope, open_non_readers

import flask_asgi

#: More non-reading clients than the pool has threads (FLASK_ASGI_THREADS=40).
READERS = 45
FILE_SIZE = 5 * 1024 * 1024


def assert_started(sockets: list[socket.socket]) -> None:
    """Each non-reader's response did start (12 bytes read: the status line's start)."""
    for sock in sockets:
        sock.settimeout(10)
        assert sock.recv(12, socket.MSG_WAITALL) == b"HTTP/1.1 200"


def assert_sync_views_answer(base_url: str) -> float:
    """A sync view and a 404 answer while the non-readers wait: the slower one's time."""
    slowest = 0.0
    with httpx.Client(base_url=base_url, timeout=5) as client:
        for path, status in (("/sync", 200), ("/missing", 404)):
            started = time.monotonic()
            assert client.get(path).status_code == status
            slowest = max(slowest, time.monotonic() - started)
    return slowest


@pytest.fixture
def big_file_app(tmp_path: Path) -> Iterator[tuple[flask.Flask, flask_asgi.ASGI]]:
    (tmp_path / "big.bin").write_bytes(b"x" * FILE_SIZE)
    app = flask.Flask(__name__, static_folder=str(tmp_path), static_url_path="/static")
    asgi = flask_asgi.ASGI(app)

    @app.get("/sync")
    def sync_view() -> dict[str, Any]:
        return {"workers_busy": asgi.stats()["workers_busy"]}

    @app.get("/generated")
    def generated() -> flask.Response:
        def chunks() -> Iterator[bytes]:
            for _ in range(FILE_SIZE // 65536):
                yield b"y" * 65536

        return flask.Response(chunks())

    yield app, asgi


@pytest.mark.parametrize("path", ["/static/big.bin", "/generated"])
def test_non_reading_clients_hold_no_worker_thread(
    big_file_app: tuple[flask.Flask, flask_asgi.ASGI], live_server: Any, path: str
) -> None:
    app, asgi = big_file_app
    base_url = live_server(asgi)
    with ExitStack() as stack:
        sockets = open_non_readers(base_url, path, READERS, stack)
        time.sleep(1)  # every response has begun and filled what it may
        assert assert_sync_views_answer(base_url) < 5
        # The threads are back in the pool: only the probe's own one is busy.
        deadline = time.monotonic() + 5
        while True:
            busy = httpx.get(base_url + "/sync", timeout=5).json()["workers_busy"]
            if busy <= 1 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert busy <= 1
        assert_started(sockets)


def test_a_reader_that_reads_late_gets_the_whole_file(
    big_file_app: tuple[flask.Flask, flask_asgi.ASGI], live_server: Any
) -> None:
    """The buffer refills as the client reads: the file arrives whole, byte for byte."""
    app, asgi = big_file_app
    base_url = live_server(asgi)
    with httpx.Client(base_url=base_url, timeout=30) as client:
        with client.stream("GET", "/static/big.bin") as response:
            time.sleep(0.5)  # the buffer is full and no thread pumps
            body = b"".join(response.iter_bytes())
    assert body == b"x" * FILE_SIZE


def _read_slowly(base_url: str, path: str, stop_after: int | None = None) -> bytes:
    """GET ``path`` on a small receive buffer, 64 KiB every 5 ms (the response goes out in
    many pumps); ``stop_after``: leave once this many bytes have come."""
    host, port = base_url.removeprefix("http://").split(":")
    data = b""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect((host, int(port)))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        while chunk := sock.recv(65536):
            data += chunk
            if stop_after is not None and len(data) >= stop_after:
                break
            time.sleep(0.005)
    return data


def test_stream_with_context_across_pumps_and_one_close(live_server: Any) -> None:
    """Every pump runs in the request's one Context: ``request`` stays there across the
    pumps, and the close pops Flask's context where it was pushed (no ValueError from a
    token of another Context); close() runs once, also when the client leaves mid-way."""
    app = flask.Flask(__name__)
    asgi = flask_asgi.ASGI(app)
    closed: list[str] = []
    yielded: list[int] = []

    @app.get("/ctx")
    def ctx_stream() -> flask.Response:
        @flask.stream_with_context
        def chunks() -> Iterator[bytes]:
            try:
                for n in range(int(flask.request.args.get("n", "1000000"))):
                    yielded.append(n)
                    yield flask.request.args["tag"].encode() * 65536
            finally:
                closed.append(flask.request.args["tag"])

        return flask.Response(chunks())

    base_url = live_server(asgi)
    body = _read_slowly(base_url, "/ctx?tag=a&n=24")
    assert body.endswith(b"0\r\n\r\n")  # chunked, and complete
    assert body.count(b"a" * 1024) >= 24 * 64 - 24  # all of it (give or take chunk framing)
    assert closed == ["a"]

    yielded.clear()
    _read_slowly(base_url, "/ctx?tag=b", stop_after=512 * 1024)  # then leaves
    deadline = time.monotonic() + 10
    while "b" not in closed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert closed == ["a", "b"]
    stopped_at = len(yielded)
    time.sleep(0.3)
    assert len(yielded) == stopped_at  # no iteration after the close


async def test_a_request_cancelled_while_its_view_runs_closes_the_body_once() -> None:
    """The server cancels the request task (its shutdown) while the sync view runs: the
    body the thread then hands over is closed, once, and never sent."""
    app = flask.Flask(__name__)
    asgi = flask_asgi.ASGI(app)
    closed: list[str] = []
    running, release = threading.Event(), threading.Event()

    @app.get("/late")
    def late() -> flask.Response:
        @flask.stream_with_context
        def chunks() -> Iterator[bytes]:
            yield b"x" * 1024  # never started: the close pops the context it pushed

        running.set()
        release.wait(10)
        response = flask.Response(chunks())
        response.call_on_close(lambda: closed.append("closed"))
        return response

    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(3600)
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    task = asyncio.ensure_future(asgi(http_scope("/late"), receive, send))
    assert await asyncio.to_thread(running.wait, 10)
    task.cancel()
    await asyncio.sleep(0.05)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadline = time.monotonic() + 5
    while not closed and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    assert closed == ["closed"]
    assert sent == []


async def _call(
    asgi: flask_asgi.ASGI, path: str, extensions: dict[str, Any], range_: bytes | None = None
) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    scope = http_scope(path)
    scope["extensions"] = extensions
    if range_ is not None:
        scope["headers"] = [*scope["headers"], (b"range", range_)]

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(3600)
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asgi(scope, receive, send)
    return sent


async def test_a_whole_file_goes_out_by_pathsend_where_the_server_offers_it(
    tmp_path: Path,
) -> None:
    """granian offers ``http.response.pathsend``: a whole file is sent by path, read by the
    server. A range of it, or a server without the extension, gets body messages."""
    big = tmp_path / "big.bin"
    big.write_bytes(b"z" * (FILE_SIZE // 4))
    app = flask.Flask(__name__)
    asgi = flask_asgi.ASGI(app)

    @app.get("/file")
    def file() -> flask.Response:
        return flask.send_file(big)

    pathsend = {"http.response.pathsend": {}}
    sent = await _call(asgi, "/file", pathsend)
    assert [message["type"] for message in sent] == [
        "http.response.start",
        "http.response.pathsend",
    ]
    assert sent[1]["path"] == str(big)
    assert (b"content-length", str(FILE_SIZE // 4).encode()) in sent[0]["headers"]

    for extensions, range_ in (({}, None), (pathsend, b"bytes=10-1000009")):
        sent = await _call(asgi, "/file", extensions, range_)
        assert sent[0]["status"] == (206 if range_ else 200)
        assert {message["type"] for message in sent[1:]} == {"http.response.body"}
        body = b"".join(message["body"] for message in sent[1:])
        assert body == (b"z" * 1000000 if range_ else b"z" * (FILE_SIZE // 4))


async def test_a_stream_that_fails_is_closed_once_and_its_error_raised() -> None:
    app = flask.Flask(__name__)
    asgi = flask_asgi.ASGI(app)
    closed: list[str] = []

    @app.get("/fails")
    def fails() -> flask.Response:
        def chunks() -> Iterator[bytes]:
            yield b"first;"
            raise RuntimeError("mid-stream failure")

        response = flask.Response(chunks())
        response.call_on_close(lambda: closed.append("closed"))
        return response

    with pytest.raises(RuntimeError, match="mid-stream failure"):
        await _call(asgi, "/fails", {})
    assert closed == ["closed"]
