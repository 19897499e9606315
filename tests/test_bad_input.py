"""Malformed, oversized, truncated or failing requests get Flask's error answers; nothing hangs."""

from __future__ import annotations

import asyncio
import io
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from flask import Flask, request
from helpers import http_scope
from werkzeug.exceptions import ClientDisconnected

import flask_asgi


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def errors(self) -> list[logging.LogRecord]:
        return [r for r in self.records if r.levelno >= logging.ERROR]


@pytest.fixture
def log_records() -> Iterator[ListHandler]:
    """Every log record, from Flask's, flask-asgi's and uvicorn's loggers (uvicorn's do not
    propagate to the root logger)."""
    handler = ListHandler()
    loggers = [
        logging.getLogger(),
        logging.getLogger("uvicorn"),
        logging.getLogger("uvicorn.error"),
    ]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler
    for logger in loggers:
        logger.removeHandler(handler)


def call_asgi(
    asgi: flask_asgi.ASGI,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    chunks: list[bytes],
) -> tuple[int, bytes, int]:
    """Call the ASGI app directly; return (status, body, number of body chunks it received)."""
    received = 0
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal received
        if received < len(chunks):
            received += 1
            return {
                "type": "http.request",
                "body": chunks[received - 1],
                "more_body": received < len(chunks),
            }
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = http_scope(path, method, headers)
    asyncio.run(asyncio.wait_for(asgi(scope, receive, send), 10))
    body = b"".join(m.get("body", b"") for m in messages[1:])
    return messages[0]["status"], body, received


def make_upload_app(limit: int) -> tuple[Flask, flask_asgi.ASGI, list[Any]]:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = limit
    asgi = flask_asgi.ASGI(app)
    seen: list[Any] = []

    @app.post("/upload")
    def upload() -> str:
        try:
            data = request.get_data()
        except Exception as error:
            seen.append(error)
            raise
        seen.append(len(data))
        return str(len(data))

    @app.post("/async-upload")
    async def async_upload() -> str:
        seen.append("view entered")
        return str(len(request.get_data()))

    return app, asgi, seen


@pytest.mark.parametrize("view_async", [False, True], ids=["sync-view", "async-view"])
def test_malformed_json_is_400(app: Flask, client: Any, view_async: bool) -> None:
    if view_async:

        @app.post("/json")
        async def json_view() -> Any:
            return {"got": request.get_json()}

    else:

        @app.post("/json")
        def json_view() -> Any:
            return {"got": request.get_json()}

    good = client.post("/json", json={"a": [1, 2]})
    assert (good.status_code, good.json) == (200, {"got": {"a": [1, 2]}})
    bad = client.post("/json", data="{not json", content_type="application/json")
    assert bad.status_code == 400


@pytest.mark.parametrize("path", ["/upload", "/async-upload"])
def test_content_length_over_max_is_413_without_reading(path: str) -> None:
    app, asgi, seen = make_upload_app(1000)
    headers = [(b"content-length", b"5000"), (b"content-type", b"application/octet-stream")]
    status, _, received = call_asgi(asgi, "POST", path, headers, [b"x" * 5000])
    assert status == 413
    assert received == 0  # refused from the header: not one body message was taken
    assert "view entered" in seen or seen[0].code == 413


def test_content_length_over_max_on_real_server(live_server: Any) -> None:
    app, asgi, seen = make_upload_app(1000)
    base = live_server(asgi)
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        # Announce 50 MB, send none of it: the answer must not wait for the body.
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n")
        status_line = sock.recv(4096).split(b"\r\n", 1)[0]
    # The reason phrase is the server's, from Python's http.HTTPStatus: "Request Entity Too
    # Large" up to 3.12, "Content Too Large" (RFC 9110) from 3.13 on. The code is what counts.
    assert status_line.split(b" ", 2)[:2] == [b"HTTP/1.1", b"413"], status_line
    assert [getattr(e, "code", None) for e in seen] == [413]


def chunks(count: int, size: int = 64 * 1024) -> Iterator[bytes]:
    for _ in range(count):
        yield b"x" * size


def test_chunked_upload_under_limit(live_server: Any) -> None:
    app, asgi, seen = make_upload_app(1024 * 1024)
    base = live_server(asgi)
    response = httpx.post(base + "/upload", content=chunks(4), timeout=30)
    assert response.request.headers["Transfer-Encoding"] == "chunked"
    assert (response.status_code, response.text) == (200, str(4 * 64 * 1024))
    assert seen == [4 * 64 * 1024]


def test_chunked_upload_over_limit_is_413(live_server: Any) -> None:
    app, asgi, seen = make_upload_app(1024 * 1024)
    base = live_server(asgi)
    try:
        response = httpx.post(base + "/upload", content=chunks(64), timeout=30)  # 4 MiB
    except httpx.TransportError:
        status = None  # the server may close the connection while the client still sends
    else:
        status = response.status_code
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
        time.sleep(0.05)  # the client may give up before the server's view has recorded
    assert seen and getattr(seen[0], "code", None) == 413, seen
    assert status in (413, None)


def test_truncated_body_is_client_disconnected(live_server: Any) -> None:
    app, asgi, seen = make_upload_app(1024 * 1024)
    base = live_server(asgi)
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"y" * 10)
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(seen) == 1 and isinstance(seen[0], ClientDisconnected)
    assert seen[0].code == 400
    # The server survived and still answers.
    assert httpx.post(base + "/upload", content=b"abc").text == "3"


def test_truncated_body_via_direct_asgi_call() -> None:
    app, asgi, seen = make_upload_app(1024 * 1024)
    messages = iter(
        [
            {"type": "http.request", "body": b"y" * 10, "more_body": True},
            {"type": "http.disconnect"},
        ]
    )
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/upload",
        "query_string": b"",
        "headers": [(b"content-length", b"100")],
    }
    asyncio.run(asyncio.wait_for(asgi(scope, receive, send), 10))
    assert isinstance(seen[0], ClientDisconnected)
    assert sent[0]["status"] == 400


def test_unknown_method_is_405(app: Flask, client: Any, live_server: Any, asgi: Any) -> None:
    @app.get("/only-get")
    async def only_get() -> str:
        return "ok"

    response = client.open("/only-get", method="BREW")
    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}
    assert client.delete("/only-get").status_code == 405
    base = live_server(asgi)
    assert httpx.delete(base + "/only-get").status_code == 405


def test_exception_in_async_view_is_500_and_logged_once(
    live_server: Any, log_records: ListHandler
) -> None:
    app = Flask(__name__)
    asgi = flask_asgi.ASGI(app)

    @app.get("/boom")
    async def boom() -> str:
        await asyncio.sleep(0)
        raise ZeroDivisionError("async boom")

    assert app.testing is False
    response = app.test_client().get("/boom")
    assert response.status_code == 500
    assert b"Internal Server Error" in response.data
    errors = log_records.errors()
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert errors[0].exc_info and isinstance(errors[0].exc_info[1], ZeroDivisionError)

    log_records.records.clear()
    base = live_server(asgi)
    assert httpx.get(base + "/boom").status_code == 500
    errors = log_records.errors()
    assert len(errors) == 1, [r.getMessage() for r in errors]  # Flask's log, not uvicorn's too
    assert errors[0].name == app.logger.name


def test_exception_in_async_before_request_is_500(app: Flask, client: Any) -> None:
    app.config["TESTING"] = False
    torn_down: list[Any] = []

    @app.before_request
    async def fail() -> None:
        await asyncio.sleep(0)
        raise LookupError("hook failed")

    @app.teardown_request
    def teardown(error: BaseException | None) -> None:
        torn_down.append(error)

    @app.get("/")
    async def index() -> str:
        raise AssertionError("the view must not run")

    assert client.get("/").status_code == 500
    assert len(torn_down) == 1 and isinstance(torn_down[0], LookupError)


def test_exception_in_testing_mode_propagates(app: Flask, client: Any) -> None:
    @app.get("/")
    async def index() -> str:
        raise KeyError("propagated")

    with pytest.raises(KeyError, match="propagated"):
        client.get("/")


@pytest.mark.parametrize("view_async", [False, True], ids=["sync-view", "async-view"])
def test_exception_while_streaming_closes_connection(
    live_server: Any, log_records: ListHandler, view_async: bool
) -> None:
    app = Flask(__name__)
    asgi = flask_asgi.ASGI(app)

    def generate() -> Iterator[str]:
        yield "first chunk;"
        raise RuntimeError("mid-stream failure")

    if view_async:

        @app.get("/stream")
        async def stream_view() -> Any:
            return generate()

    else:

        @app.get("/stream")
        def stream_view() -> Any:
            return generate()

    @app.get("/ok")
    async def ok() -> str:
        return "still fine"

    base = live_server(asgi)
    received = b""
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream("GET", base + "/stream", timeout=10) as response:
            assert response.status_code == 200  # headers were already sent
            for piece in response.iter_bytes():
                received += piece
    assert received == b"first chunk;"
    assert httpx.get(base + "/ok", timeout=10).text == "still fine"
    # The failure was reported (by the server), not swallowed.
    messages = [str(r.exc_info[1]) for r in log_records.errors() if r.exc_info]
    assert "mid-stream failure" in messages


def test_form_limits_are_413(app: Flask, client: Any) -> None:
    app.config["MAX_FORM_MEMORY_SIZE"] = 100
    app.config["MAX_FORM_PARTS"] = 5

    @app.post("/form")
    def form() -> dict[str, Any]:
        return {"fields": len(request.form), "files": len(request.files)}

    small = client.post("/form", data={"a": "1", "b": "2"})
    assert small.json == {"fields": 2, "files": 0}
    big_field = client.post("/form", data={"a": "x" * 500}, content_type="multipart/form-data")
    assert big_field.status_code == 413
    many = client.post(
        "/form", data={f"f{i}": "v" for i in range(20)}, content_type="multipart/form-data"
    )
    assert many.status_code == 413
    urlencoded_big = client.post("/form", data={"a": "x" * 500})
    assert urlencoded_big.status_code == 413


def test_body_in_async_view(app: Flask, client: Any, live_server: Any, asgi: Any) -> None:
    """Sync body reads (form, files, json) inside an async view: the coroutine runs in the
    request greenlet, so the reads can wait for body messages."""

    @app.post("/form")
    async def form() -> dict[str, Any]:
        await asyncio.sleep(0)
        upload = request.files.get("upload")
        return {
            "form": dict(request.form),
            "file": upload.read().decode() if upload else None,
        }

    @app.post("/data")
    async def data() -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"size": len(request.get_data())}

    assert client.post("/form", data={"a": "1"}).json == {"form": {"a": "1"}, "file": None}
    response = client.post("/form", data={"a": "2", "upload": (io.BytesIO(b"file body"), "f.txt")})
    assert response.json == {"form": {"a": "2"}, "file": "file body"}

    base = live_server(asgi)
    response = httpx.post(base + "/form", data={"x": "y"}, files={"upload": ("f", b"over http")})
    assert response.json() == {"form": {"x": "y"}, "file": "over http"}
    response = httpx.post(base + "/data", content=chunks(8), timeout=30)  # chunked
    assert response.json() == {"size": 8 * 64 * 1024}


def test_exception_while_streaming_reaches_test_client(app: Flask, client: Any) -> None:
    @app.get("/stream")
    async def stream_view() -> Any:
        def generate() -> Iterator[str]:
            yield "partial"
            raise RuntimeError("mid-stream in test client")

        return generate()

    with pytest.raises(RuntimeError, match="mid-stream in test client"):
        client.get("/stream").get_data()
    response = client.get("/stream", buffered=False)  # headers arrive before the failure
    assert response.status_code == 200
    with pytest.raises(RuntimeError, match="mid-stream in test client"):
        response.get_data()


@pytest.mark.parametrize("forwarded", ["ws", "wss"])
def test_websocket_scheme_on_http_request_is_http(live_server: Any, forwarded: str) -> None:
    """uvicorn takes X-Forwarded-Proto from 127.0.0.1 as sent: ws/wss must not make a plain
    HTTP request match a WebSocket route (400, the handler never runs), and ordinary routes
    answer normally with the matching http/https scheme."""
    app = Flask(__name__)
    asgi = flask_asgi.ASGI(app)
    ran: list[str] = []

    @asgi.websocket("/ws")
    async def socket_handler(ws: Any) -> None:
        ran.append("handler")

    @app.get("/scheme")
    def scheme() -> str:
        return request.scheme

    base = live_server(asgi)
    headers = {"X-Forwarded-Proto": forwarded}
    assert httpx.get(base + "/ws", headers=headers).status_code == 400
    response = httpx.get(base + "/scheme", headers=headers)
    assert response.status_code == 200
    assert response.text == {"ws": "http", "wss": "https"}[forwarded]
    assert ran == []
