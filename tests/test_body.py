"""The request body as the ASGI app receives it, message by message (no server between)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import werkzeug.test
from flask import Flask, request
from helpers import body_reader, http_scope

from flask_asgi import ASGI
from flask_asgi.testing import asgi_as_wsgi

LIMIT = 4 * 1024


def make_asgi(view_async: bool) -> tuple[ASGI, list[Any]]:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = LIMIT
    seen: list[Any] = []

    read = body_reader(seen)

    if view_async:

        @app.post("/")
        async def upload() -> str:
            return read()
    else:
        app.post("/")(read)
    return ASGI(app), seen


async def call(
    asgi: ASGI, headers: list[tuple[bytes, bytes]], messages: list[Any], http_version: str = "1.1"
) -> int:
    scope = http_scope("/", "POST", [(b"host", b"test"), *headers])
    scope["http_version"] = http_version
    inbox = list(messages)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop(0) if inbox else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asgi(scope, receive, send)
    return int(sent[0]["status"])


def body(data: bytes, more: bool = True) -> dict[str, Any]:
    return {"type": "http.request", "body": data, "more_body": more}


CHUNKED = [(b"transfer-encoding", b"chunked")]
params = pytest.mark.parametrize("view_async", [False, True], ids=["sync", "async"])


@params
@pytest.mark.parametrize("version", ["2", "3"])
async def test_http2_body_without_content_length_is_read(view_async: bool, version: str) -> None:
    # HTTP/2 and 3 frame the body in the stream and send no Transfer-Encoding: the body
    # must not be taken for empty (it was: 0 bytes, and the rest of the upload lost).
    asgi, seen = make_asgi(view_async)
    status = await call(asgi, [], [body(b"a" * 1000), body(b"b" * 24, more=False)], version)
    assert (status, seen) == (200, [1024])


@params
async def test_http11_body_without_length_or_chunked_is_empty(view_async: bool) -> None:
    asgi, seen = make_asgi(view_async)
    assert (await call(asgi, [], [body(b"stray", more=False)]), seen) == (200, [0])


@params
async def test_chunked_body_exactly_at_the_limit_is_accepted(view_async: bool) -> None:
    asgi, seen = make_asgi(view_async)
    chunks = [body(b"x" * 1024) for _ in range(4)] + [body(b"", more=False)]
    assert await call(asgi, CHUNKED, chunks) == 200
    assert seen == [LIMIT]


@params
async def test_chunked_body_one_byte_past_the_limit_is_413(view_async: bool) -> None:
    # The chunks end exactly at the limit before the extra byte arrives: the case where
    # Werkzeug alone would stop reading and hand the view a truncated body.
    asgi, seen = make_asgi(view_async)
    chunks = [body(b"x" * 1024) for _ in range(4)] + [body(b"y", more=False)]
    assert await call(asgi, CHUNKED, chunks) == 413
    assert seen == ["RequestEntityTooLarge"]


@params
async def test_body_longer_than_content_length_is_400(view_async: bool) -> None:
    asgi, seen = make_asgi(view_async)
    headers = [(b"content-length", b"10")]
    assert await call(asgi, headers, [body(b"0123456789abc", more=False)]) == 400
    assert seen == ["BadRequest"]


@params
async def test_truncated_body_is_400_client_disconnected(view_async: bool) -> None:
    asgi, seen = make_asgi(view_async)
    headers = [(b"content-length", b"100")]
    assert await call(asgi, headers, [body(b"0123456789")]) == 400  # then http.disconnect
    assert seen == ["ClientDisconnected"]


@params
async def test_content_length_over_the_limit_is_413_without_reading(view_async: bool) -> None:
    asgi, seen = make_asgi(view_async)
    headers = [(b"content-length", str(LIMIT + 1).encode())]
    # No body message at all: the 413 comes from the header alone, nothing is buffered.
    assert await call(asgi, headers, []) == 413
    assert seen == ["RequestEntityTooLarge"]


def test_header_names_with_underscores_are_dropped() -> None:
    # As gunicorn does: X_Forwarded_For must not pass for X-Forwarded-For in the environ.
    from flask_asgi.protocol.environ import build_environ

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "query_string": b"",
        "headers": [
            (b"x_forwarded_for", b"6.6.6.6"),
            (b"x-forwarded-proto", b"https"),
            (b"cookie", b"a=1"),
            (b"cookie", b"b=2"),
        ],
    }
    environ = build_environ(scope, None)  # type: ignore[arg-type]
    assert "HTTP_X_FORWARDED_FOR" not in environ
    assert environ["HTTP_X_FORWARDED_PROTO"] == "https"
    assert environ["HTTP_COOKIE"] == "a=1; b=2"


# -- a body read after the response (issue 22) -------------------------------------------


def test_full_url_request_with_an_async_view() -> None:
    # Flask's test_full_url_request, with an async view: the body the view did not read
    # is read by the test after the response.
    app = Flask(__name__)
    ASGI(app)

    @app.route("/action", methods=["POST"])
    async def action() -> str:
        return "x"

    client = app.test_client()
    with client:
        rv = client.post("http://domain.com/action?vodka=42", data={"gin": 43})
        assert rv.status_code == 200
        assert "gin" in request.form
        assert "vodka" in request.args


def test_unread_large_body_stays_readable_in_a_preserved_context() -> None:
    app = Flask(__name__)
    ASGI(app)

    @app.post("/unread")
    async def unread() -> str:
        return "not read"

    client = app.test_client()
    with client:
        rv = client.post("/unread", data={"big": "x" * 300_000})
        assert rv.text == "not read"
        assert len(request.form["big"]) == 300_000


def test_receive_answers_disconnect_after_the_response() -> None:
    received: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})
        for _ in range(2):  # the body, then what a server says once the response is out
            received.append((await asyncio.wait_for(receive(), 2))["type"])

    # The response is not read (nor closed) yet: the disconnect answers the complete
    # response, not the client being done with it.
    response = werkzeug.test.Client(asgi_as_wsgi(app)).post("/", data=b"x")
    deadline = time.monotonic() + 2
    while len(received) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert received == ["http.request", "http.disconnect"]
    assert response.get_data() == b"done"


def _body_probe_app(**config: Any) -> tuple[ASGI, list[Any]]:
    """A sync view that records what wsgi.input is, what it read, and its form."""
    app = Flask(__name__)
    app.config.update(config)
    seen: list[Any] = []

    @app.post("/")
    def upload() -> str:
        seen.append(type(request.environ["wsgi.input"]).__name__)
        seen.append(request.get_data())
        seen.append(dict(request.form))
        return "ok"

    return ASGI(app), seen


async def _call_counting(
    asgi: ASGI, headers: list[tuple[bytes, bytes]], messages: list[Any], as_futures: bool = False
) -> tuple[int, list[int]]:
    """Call with a receive that records the thread it runs on; ``as_futures``: it returns
    an asyncio future completed a moment later, not a coroutine (granian's kind)."""
    scope = http_scope("/", "POST", [(b"host", b"test"), *headers])
    inbox = list(messages)
    threads: list[int] = []
    sent: list[dict[str, Any]] = []

    def next_message() -> dict[str, Any]:
        threads.append(threading.get_ident())
        return inbox.pop(0) if inbox else {"type": "http.disconnect"}

    async def receive_coroutine() -> dict[str, Any]:
        return next_message()

    def receive_future() -> asyncio.Future[dict[str, Any]]:
        future = asyncio.get_running_loop().create_future()
        message = next_message()
        if message.get("stall"):
            return future  # never completes: the client stopped sending
        asyncio.get_running_loop().call_soon(future.set_result, message)
        return future

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asgi(scope, receive_future if as_futures else receive_coroutine, send)
    return int(sent[0]["status"]), threads


FORM = [(b"content-type", b"application/x-www-form-urlencoded")]


@pytest.mark.parametrize("as_futures", [False, True], ids=["coroutine", "future"])
async def test_small_sync_body_is_received_first_and_read_from_memory(as_futures: bool) -> None:
    # Received on the loop before the view takes a thread (no receive from the worker
    # thread), and handed over as a plain in-memory stream, in one message or in two.
    asgi, seen = _body_probe_app()
    for messages in ([body(b"a=1&b=2", more=False)], [body(b"a=1&"), body(b"b=2", more=False)]):
        seen.clear()
        headers = [*FORM, (b"content-length", b"7")]
        status, threads = await _call_counting(asgi, headers, messages, as_futures)
        assert status == 200
        assert threads == [threading.get_ident()] * len(messages)  # all on the loop
        assert seen == ["BytesIO", b"a=1&b=2", {"a": "1", "b": "2"}]


async def test_small_chunked_sync_body_keeps_its_checks() -> None:
    # Whole but chunked: read through RequestBody, which still refuses past the limit.
    asgi, seen = _body_probe_app(MAX_CONTENT_LENGTH=4)
    status, _ = await _call_counting(asgi, CHUNKED, [body(b"12345", more=False)])
    assert (status, seen) == (413, ["RequestBody"])
    seen.clear()
    status, _ = await _call_counting(asgi, [*CHUNKED, *FORM], [body(b"a=1", more=False)])
    assert (status, seen) == (200, ["RequestBody", b"a=1", {"a": "1"}])


async def test_sync_body_that_stalls_after_its_first_message_times_out() -> None:
    # granian's kind of receive: the first message arrives, the second never does; the
    # one timer of the preread ends it with a 408 before the view runs.
    asgi, seen = _body_probe_app(FLASK_ASGI_BODY_TIMEOUT=0.2)
    headers = [*FORM, (b"content-length", b"7")]
    messages = [body(b"a=1&"), {"stall": True}]
    status, threads = await _call_counting(asgi, headers, messages, as_futures=True)
    assert (status, seen, len(threads)) == (408, [], 2)
