"""The request body as the ASGI app receives it, message by message (no server between)."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from helpers import body_reader, http_scope

from flask_asgi import ASGI

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
