"""A hypothesis fuzzer of ASGI ``http`` scopes and receive messages, in process.

    python stress/fuzz_asgi.py [--examples 3000] [--seed 9]

Drives the ``ASGI`` callable directly, as a server would, with scopes hypothesis builds
within the ASGI spec (any method token, any path and raw_path, query bytes, header names
and values of any bytes, HTTP 1.0/1.1/2, the optional keys present or not, ``ws``/``wss``
schemes, odd ``server``/``client``) and a stream of receive messages (body chunks of any
size with ``more_body``, a wrong or absent Content-Length, chunked, an
``http.disconnect`` at any point), against views of every kind (async and sync, reading
the body as data, form, JSON or stream, streaming, failing, aborting, timing out, a
WebSocket route). Every example must:

* return without an exception (none is documented for an ``http`` scope: errors are
  the app's 4xx/5xx answers), within 10 s;
* send ``http.response.start`` first (status 100-599, headers as pairs of bytes), then
  body messages, the last with ``more_body`` false, and nothing after it. A client that
  disconnected may get no response, or one cut short.

A failure prints hypothesis' smallest failing example and exits 1. Bounded by
``--examples``; about 30 s with the defaults on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

from flask import Flask, Response, abort, jsonify, redirect, request, stream_with_context
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

import flask_asgi

PATHS = [
    "/",
    "/echo",
    "/echo-async",
    "/form",
    "/json-async",
    "/lines",
    "/stream",
    "/stream-sync",
    "/error",
    "/error-sync",
    "/teapot",
    "/redirect",
    "/slow",
    "/ws",
    "/missing",
    "/echo/",
    "//echo",
    "/%2e%2e/echo",
]
HEADER_NAMES = [
    b"host",
    b"content-length",
    b"content-type",
    b"transfer-encoding",
    b"expect",
    b"cookie",
    b"connection",
    b"upgrade",
    b"origin",
    b"x-forwarded-proto",
    b"x-forwarded-for",
    b"accept-encoding",
    b"authorization",
    b"range",
    b"if-none-match",
]
CONTENT_TYPES = [
    b"application/json",
    b"application/x-www-form-urlencoded",
    b"multipart/form-data; boundary=B",
    b"multipart/form-data",
    b"text/plain; charset=utf-8",
    b"text/plain; charset=nope",
]


def build_app() -> flask_asgi.ASGI:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    app.config["FLASK_ASGI_RESPONSE_BUFFER"] = 64  # small: more responses stream
    app.config["FLASK_ASGI_BODY_TIMEOUT"] = 0.2  # a client that stalls gets its 408 soon
    asgi = flask_asgi.ASGI(app)

    @app.route("/", methods=["GET", "POST", "HEAD", "OPTIONS", "PUT"])
    def index() -> str:
        return "index"

    @app.route("/echo", methods=["GET", "POST", "PUT"])
    def echo() -> bytes:
        return request.get_data()

    @app.route("/echo-async", methods=["GET", "POST", "PUT"])
    async def echo_async() -> bytes:
        return request.get_data()

    @app.post("/form")
    def form() -> Any:
        return jsonify(form=request.form.to_dict(), files=sorted(request.files))

    @app.post("/json-async")
    async def json_async() -> Any:
        return jsonify(request.get_json())

    @app.post("/lines")
    def lines() -> str:
        return str(sum(1 for _ in request.stream))

    @app.get("/stream")
    async def stream() -> Response:
        async def chunks() -> AsyncIterator[str]:
            for n in range(3):
                yield f"{n}\n"
                await asyncio.sleep(0)

        return Response(flask_asgi.stream(chunks()))

    @app.get("/stream-sync")
    def stream_sync() -> Response:
        def chunks() -> Iterator[str]:
            yield request.path
            yield "done"

        return Response(stream_with_context(chunks()))

    @app.get("/error")
    async def error() -> str:
        raise RuntimeError("a failing view")

    @app.get("/error-sync")
    def error_sync() -> str:
        raise KeyError("a failing view")

    @app.get("/teapot")
    async def teapot() -> str:
        abort(418)

    @app.get("/redirect")
    def to_index() -> Any:
        return redirect("/")

    @app.get("/slow")
    @flask_asgi.timeout(0.05)
    async def slow() -> str:
        await asyncio.sleep(10)
        return "never"

    @asgi.websocket("/ws")
    async def ws(socket: flask_asgi.WebSocket) -> None:
        await socket.accept()
        await socket.close()

    return asgi


def _header_value(name: bytes) -> st.SearchStrategy[bytes]:
    if name == b"content-length":
        return st.one_of(
            st.integers(0, 100).map(lambda n: str(n).encode()),
            st.sampled_from([b"", b"-1", b"abc", b"1, 1", b"99999999999"]),
        )
    if name == b"content-type":
        return st.sampled_from(CONTENT_TYPES)
    if name == b"transfer-encoding":
        return st.sampled_from([b"chunked", b"gzip", b"identity", b"chunked, chunked"])
    return st.binary(max_size=40)


header = st.one_of(
    st.sampled_from(HEADER_NAMES).flatmap(lambda n: st.tuples(st.just(n), _header_value(n))),
    st.tuples(st.binary(min_size=1, max_size=20), st.binary(max_size=40)),
)
# Mostly what the views take (so most examples reach a view), sometimes anything.
method = st.one_of(
    st.sampled_from(["GET", "GET", "POST", "POST", "HEAD", "PUT", "DELETE", "OPTIONS"]),
    st.sampled_from(["GET", "POST"]),
    st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ-!#$%&'*+.^_`|~0123456789", min_size=1, max_size=10),
)
path = st.one_of(
    st.sampled_from(PATHS),
    st.sampled_from(PATHS),
    st.sampled_from(PATHS),
    st.text(max_size=30),
    st.text(max_size=30).map("/".__add__),
)
optional = st.sampled_from([True, False])
ASGI_VERSIONS = [{"version": "3.0"}, {"version": "3.0", "spec_version": "2.4"}]


@st.composite
def scopes(draw: st.DrawFn) -> dict[str, Any]:
    chosen_path = draw(path)
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": draw(
            st.sampled_from([{"version": "3.0"}, {"version": "3.0", "spec_version": "2.4"}])
        ),
        "http_version": draw(st.sampled_from(["1.0", "1.1", "2"])),
        "method": draw(method),
        "path": chosen_path,
        "query_string": draw(st.binary(max_size=30)),
        "headers": draw(st.lists(header, max_size=8)),
    }
    if draw(optional):
        scope["scheme"] = draw(st.sampled_from(["http", "https", "ws", "wss"]))
    if draw(optional):
        scope["raw_path"] = draw(
            st.one_of(st.none(), st.binary(max_size=30), st.just(chosen_path.encode("utf-8")))
        )
    if draw(optional):
        scope["root_path"] = draw(st.sampled_from(["", "/prefix", "/é"]))
    if draw(optional):
        scope["server"] = draw(
            st.sampled_from([None, ("127.0.0.1", 8000), ("::1", 443), ("/tmp/sock", None)])
        )
    if draw(optional):
        scope["client"] = draw(st.sampled_from([None, ("127.0.0.1", 50000), ("::1", 1)]))
    if draw(optional):
        scope["state"] = {}
    if draw(optional):
        scope["extensions"] = {}
    return scope


@st.composite
def bodies(draw: st.DrawFn) -> list[dict[str, Any]]:
    """The receive messages: body chunks, maybe ending early or with a disconnect."""
    chunks = draw(st.lists(st.binary(max_size=200), max_size=5))
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": chunk, "more_body": True} for chunk in chunks
    ]
    # "stall": the client sends no more and stays (the body timeout answers, 408).
    ending = draw(st.sampled_from(["complete", "complete", "disconnect", "stall"]))
    if ending == "complete":
        messages.append({"type": "http.request", "body": b"", "more_body": False})
    elif ending == "disconnect":
        messages.append({"type": "http.disconnect"})
    if messages and draw(st.booleans()) and messages[-1]["type"] == "http.request":
        messages[-1]["body"] = draw(st.binary(max_size=100))  # the last chunk carries data
    return messages


class Failure(AssertionError):
    pass


def check_messages(sent: list[dict[str, Any]], disconnected: bool) -> int | None:
    """The status if the messages are a well-formed response; Failure otherwise."""
    if not sent:
        if disconnected:
            return None
        raise Failure("no http.response.start before the app returned")
    start, rest = sent[0], sent[1:]
    if start.get("type") != "http.response.start":
        raise Failure(f"the first message is {start.get('type')!r}")
    status = start["status"]
    if not isinstance(status, int) or not 100 <= status <= 599:
        raise Failure(f"bad status {status!r}")
    for pair in start.get("headers", []):
        if len(pair) != 2 or not all(isinstance(part, bytes) for part in pair):
            raise Failure(f"bad header {pair!r}")
    for n, message in enumerate(rest):
        if message.get("type") != "http.response.body":
            raise Failure(f"message {n + 1} is {message.get('type')!r}")
        if not isinstance(message.get("body", b""), bytes):
            raise Failure("a body that is not bytes")
        if not message.get("more_body", False) and n != len(rest) - 1:
            raise Failure("messages after the last body message")
    finished = bool(rest) and not rest[-1].get("more_body", False)
    if not finished and not disconnected and status != 200:
        raise Failure(f"a {status} response never finished")
    if not finished and not disconnected:
        raise Failure("the response never finished")
    return status


async def exchange(
    asgi: flask_asgi.ASGI, scope: dict[str, Any], messages: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], bool]:
    """One request; (the messages the app sent, the client disconnected)."""
    sent: list[dict[str, Any]] = []
    queue = list(messages)
    done = asyncio.Event()
    disconnected = False

    async def receive() -> dict[str, Any]:
        nonlocal disconnected
        if queue:
            message = queue.pop(0)
            if message["type"] == "http.disconnect":
                disconnected = True
            return message
        await done.wait()  # a client that stays until its response is complete
        disconnected = True
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if disconnected and message["type"] == "http.response.body":
            return  # a server drops what is sent to a client that has gone
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            done.set()

    try:
        await asyncio.wait_for(asgi(scope, receive, send), 10)
    except TimeoutError:
        raise Failure("the app did not return within 10 s") from None
    finally:
        done.set()
    return sent, disconnected


def run(examples: int, seed_value: int) -> dict[str, Any]:
    asgi = build_app()
    # The expected warnings (408s, timeouts) and the failing views' tracebacks would be
    # thousands of lines; errors from flask-asgi itself still show.
    logging.getLogger("flask_asgi").setLevel(logging.ERROR)
    asgi.app.logger.disabled = True
    loop = asyncio.new_event_loop()
    statuses: Counter[str] = Counter()
    count = 0

    @seed(seed_value)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    @given(scope=scopes(), messages=bodies())
    def fuzz(scope: dict[str, Any], messages: list[dict[str, Any]]) -> None:
        nonlocal count
        count += 1
        sent, disconnected = loop.run_until_complete(exchange(asgi, scope, messages))
        status = check_messages(sent, disconnected)
        statuses["no response (client gone)" if status is None else str(status)] += 1

    started = time.monotonic()
    failure = None
    try:
        fuzz()
    except Exception as exc:  # hypothesis re-raises the smallest failing example's error
        failure = f"{type(exc).__name__}: {exc}"
    finally:
        loop.close()
    return {
        "examples": count,
        "seed": seed_value,
        "seconds": round(time.monotonic() - started, 1),
        "statuses": dict(sorted(statuses.items())),
        "failure": failure,
        "ok": failure is None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=9)
    args = parser.parse_args()
    result = run(args.examples, args.seed)
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
