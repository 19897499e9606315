"""The app of stress/granian_backpressure.py: long async SSE streams, a sync view, and the
readiness probe at /readyz (FLASK_ASGI_READY_PATH, set here)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from flask import Flask, Response, request

import flask_asgi

app = Flask(__name__)
app.config["FLASK_ASGI_READY_PATH"] = "/readyz"


@app.get("/sse")
async def sse() -> Response:
    """An SSE stream: one event at once, then one a second for ``?seconds=`` (at most 60)."""
    seconds = min(request.args.get("seconds", 5, type=int), 60)

    async def events() -> AsyncIterator[str]:
        yield "open"
        for tick in range(seconds):
            await asyncio.sleep(1)
            yield str(tick)

    return flask_asgi.event_stream(events())


@app.get("/sync")
def sync_view() -> str:
    return "sync"
