"""A CEILING, NOT A RUNTIME: the benchmark's Flask app called inline on the server loop.

``uvicorn inline_flask_app:asgi``. The request body is read up front, then
``app.wsgi_app`` runs right on the event loop, with no request greenlet and no worker
thread, and its response is sent as one message. That is only Flask + Werkzeug + the
server: nothing can wait (an async view would block the loop through ``flask[async]``'s
per-call event loop, so the async routes here are plain ``def``), a slow view stalls every
request. It measures what any adapter for an unmodified Flask app can at best reach.

The collector is tuned at lifespan startup as flask-asgi tunes it when it serves
(``FLASK_ASGI_GC``, "auto" unless set): GC tuning is not adapter overhead, so the ceiling
gets it too, and ``--env FLASK_ASGI_GC=off`` turns it off for both.
"""

from __future__ import annotations

import gc
import io
import os
from typing import Any

from common import HELLO
from flask import Flask, request

from flask_asgi.ground.gc_tuning import parse_gc_setting
from flask_asgi.protocol.environ import build_environ

app = Flask(__name__)


@app.get("/hello")
def hello():  # type: ignore[no-untyped-def]
    return HELLO


@app.get("/sync-hello")
def sync_hello():  # type: ignore[no-untyped-def]
    return HELLO


@app.post("/echo")
def echo():  # type: ignore[no-untyped-def]
    return request.get_json()


async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            thresholds = parse_gc_setting(os.environ.get("FLASK_ASGI_GC", "auto"))
            if message["type"] == "lifespan.startup" and thresholds is not None:
                gc.collect()
                gc.freeze()
                gc.set_threshold(*thresholds)
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    environ = build_environ(scope, receive)
    environ["wsgi.input"] = io.BytesIO(b"".join(chunks))
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started[:] = [status, headers]

    result = app.wsgi_app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    status, headers = started
    await send(
        {
            "type": "http.response.start",
            "status": int(status.split(" ", 1)[0]),
            "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        }
    )
    await send({"type": "http.response.body", "body": body})
