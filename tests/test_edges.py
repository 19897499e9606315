"""Hardened edges (issue 21), on the real servers ``flask serve`` starts, over raw sockets.

Each server is started once with ``--root-path /prefix`` (tests/server_matrix_app.py):
request heads over the limit are refused before they are buffered, a request framed
both by ``Transfer-Encoding: chunked`` and ``Content-Length`` (or naming two hosts) is
refused and its connection closed so nothing after it is served, ``--root-path`` means
the same URLs on every server, and (stress/ws_limits.py's short run) an oversized
WebSocket message is closed with 1009 as it arrives.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, VENV_BIN, free_port, http_scope

import flask_asgi

# The stress scripts' own helpers: a server's RSS (all its processes) and how it is stopped.
sys.path.insert(0, str(ROOT / "stress"))
try:
    from common import stop_server, tree_rss_mib  # noqa: E402
finally:
    sys.path.remove(str(ROOT / "stress"))

TESTS = Path(__file__).resolve().parent
SERVERS = ["uvicorn", "granian", "hypercorn"]
MIB = 1024 * 1024


class Served:
    def __init__(self, name: str, proc: Any, port: int) -> None:
        self.name, self.proc, self.port = name, proc, port

    def connect(self, timeout: float = 5) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def exchange(self, data: bytes, wait: float = 2.0) -> tuple[list[int], bool, bytes]:
        """Send ``data``, read until the server closes or is quiet for ``wait`` seconds:
        (the statuses of the responses, the server closed the connection, the bytes)."""
        with self.connect(wait) as sock:
            sock.sendall(data)
            received, closed = b"", False
            try:
                while chunk := sock.recv(65536):
                    received += chunk
                closed = True
            except TimeoutError:
                pass
            except ConnectionResetError:
                closed = True
        statuses = [
            int(line.split(b" ")[1])
            for line in received.split(b"\r\n")
            if line.startswith(b"HTTP/1.1 ") and line[9:12].isdigit()
        ]
        return statuses, closed, received


@pytest.fixture(scope="module", params=SERVERS)
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    port = free_port()
    proc = subprocess.Popen(
        [str(VENV_BIN / "flask"), "--app", "server_matrix_app", "serve", "--server",
         request.param, "--port", str(port), "--log-level", "error", "--root-path", "/prefix"],
        cwd=TESTS, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    server = Served(request.param, proc, port)
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, "the server exited"
        try:
            if server.exchange(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n", 1)[0] == [200]:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.2)
    try:
        yield server
    finally:
        stop_server(proc)


def _info(served: Served, path: str) -> tuple[int, Any]:
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    statuses, _, received = served.exchange(request)
    body = received.partition(b"\r\n\r\n")[2]
    return statuses[0], json.loads(body) if statuses == [200] else None


def test_root_path_means_the_same_urls_on_every_server(served: Served) -> None:
    """--root-path as uvicorn applies it: the proxy has stripped the prefix, so ``/info``
    is the app's ``/info`` under ``/prefix``, and ``/prefix/info`` is not (before,
    granian and hypercorn answered both)."""
    status, info = _info(served, "/info")
    assert (status, info["script_root"], info["path"]) == (200, "/prefix", "/info")
    assert _info(served, "/prefix/info")[0] == 404


def test_websocket_under_the_root_path(served: Served) -> None:
    """WebSocket scopes get the root path as HTTP ones do: ``/ws/echo`` is the app's route."""
    from websockets.sync.client import connect

    with connect(f"ws://127.0.0.1:{served.port}/ws/echo", open_timeout=10) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"


SMUGGLED = b"GET /info HTTP/1.1\r\nHost: x\r\n\r\n"


def test_chunked_with_content_length_serves_nothing_after_it(served: Served) -> None:
    """RFC 9112 §6.3: a request framed both ways gets its answer and the connection is
    closed; what follows the chunked terminator (a smuggled request) is never served."""
    request = (
        b"POST /echo-async HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED
    )
    statuses, closed, received = served.exchange(request)
    assert len(statuses) == 1 and closed, (statuses, closed, received[:300])
    assert b'"script_root"' not in received  # /info's answer
    # uvicorn (llhttp) and flask-asgi answer 400; granian (hyper) lets chunked win, then closes.
    assert statuses[0] == (200 if served.name == "granian" else 400)


def test_two_host_headers_are_refused(served: Served) -> None:
    request = b"GET /info HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n" + SMUGGLED
    statuses, closed, _ = served.exchange(request)
    assert (statuses, closed) == ([400], True)


def test_normal_headers_still_work(served: Served) -> None:
    """Heads well under the limit pass: 90 headers of 100 bytes (granian's hyper takes
    100 headers at most; uvicorn and hypercorn take 300 of them too)."""
    count = 90 if served.name == "granian" else 300
    headers = b"".join(b"X-Filler-%d: %s\r\n" % (n, b"v" * 80) for n in range(count))
    request = b"GET /info HTTP/1.1\r\nHost: x\r\n" + headers + b"Connection: close\r\n\r\n"
    assert served.exchange(request)[0] == [200]


def test_huge_heads_are_refused_before_they_are_buffered(served: Served) -> None:
    """5 connections each try to send 20 MiB of headers: each is answered 431 (uvicorn's
    h11 answers 400) and closed once past the limit (64 KiB), and the server's memory does
    not grow by what they sent (before: uvicorn took it all, 10 such took it to 554 MiB)."""
    before = tree_rss_mib(served.proc.pid)
    line = b"X-Big: " + b"a" * 1000 + b"\r\n"
    sockets, sent = [], []
    for _ in range(5):
        sock = served.connect(timeout=5)
        sockets.append(sock)
        total = 0
        try:
            sock.sendall(b"GET /info HTTP/1.1\r\nHost: x\r\n")
            while total < 20 * MIB:
                sock.sendall(line * 64)
                total += len(line) * 64
        except OSError:
            pass  # the server has closed the connection
        sent.append(total)
    grown = tree_rss_mib(served.proc.pid) - before
    answers = []
    for sock in sockets:
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except OSError:
            pass
        sock.close()
        answers.append(received[:12])
    assert grown < 30, (grown, sent)
    assert max(sent) < 20 * MIB, sent  # each was cut off
    for answer in answers:  # a reset may come first when the client was still sending
        assert answer in (b"HTTP/1.1 431", b"HTTP/1.1 400", b""), answers
    assert b"HTTP/1.1 431" in answers, answers


def test_websocket_message_over_the_limit_is_closed_as_it_arrives() -> None:
    """stress/ws_limits.py's short run: 10 connections each send 2 MiB of a 2 MiB message
    (all but its last byte) against the default 1 MiB FLASK_ASGI_WEBSOCKET_MAX_MESSAGE:
    uvicorn and hypercorn close each with 1009 before it is complete, and hold far less
    than the 20 MiB sent (granian has no such setting: docs/reliability.md)."""
    result = subprocess.run(
        [str(VENV_BIN / "python"), str(ROOT / "stress" / "ws_limits.py"), "--connections",
         "10", "--mib", "2", "--servers", "uvicorn,hypercorn"],
        capture_output=True, text=True, timeout=240, cwd=ROOT / "stress",
    )  # fmt: skip
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["server"] for line in lines] == ["uvicorn", "hypercorn"], result.stderr[-2000:]
    for line in lines:
        assert line["close_codes"] == {"1009": 10}, line
        assert line["rss_held_mib"] - line["rss_before_mib"] < 30, line
    assert result.returncode == 0


def _refused_in_process(headers: list[tuple[bytes, bytes]]) -> tuple[list[Any], list[str]]:
    """Call the ASGI app directly: the messages sent, and whether a view ran."""
    import asyncio

    from flask import Flask

    app = Flask(__name__)
    asgi = flask_asgi.ASGI(app)
    ran: list[str] = []

    @app.post("/")
    async def view() -> str:
        ran.append("view")
        return "ran"

    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"0\r\n\r\n", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = http_scope("/", "POST", headers=headers)
    asyncio.run(asgi(scope, receive, send))
    return sent, ran


@pytest.mark.parametrize(
    "headers",
    [
        [(b"host", b"x"), (b"transfer-encoding", b"chunked"), (b"content-length", b"5")],
        [(b"host", b"a"), (b"host", b"b")],
        [(b"host", b"x"), (b"content-length", b"5"), (b"content-length", b"5")],
    ],
    ids=["chunked-and-length", "two-hosts", "two-lengths"],
)
def test_refused_before_the_app_with_connection_close(headers: list[tuple[bytes, bytes]]) -> None:
    """flask-asgi's own check, for servers that pass such a request on (uvicorn's h11,
    hypercorn): 400 with Connection: close, and no view runs."""
    sent, ran = _refused_in_process(headers)
    assert sent[0]["status"] == 400 and (b"connection", b"close") in sent[0]["headers"]
    assert ran == []


def test_smuggling_on_uvicorn_h11_is_refused_by_flask_asgi() -> None:
    """uvicorn's h11 protocol passes a request framed both ways on (chunked wins): flask-
    asgi's 400 + Connection: close is what keeps the request after it from being served."""
    from flask import Flask
    from helpers import run_live

    app = Flask(__name__)
    asgi = flask_asgi.ASGI(app)
    ran: list[str] = []

    @app.route("/", methods=["GET", "POST"])
    async def view() -> str:
        ran.append("view")
        return "ran"

    with run_live(asgi, graceful=True, http="h11") as base:
        port = int(base.rsplit(":", 1)[1])
        served = Served("uvicorn-h11", None, port)
        request = (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        statuses, closed, received = served.exchange(request)
    assert (statuses, closed, ran) == ([400], True, []), received[:300]
