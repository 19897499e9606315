"""The benchmark app on flask-asgi: an unmodified Flask app, served by uvicorn through
``flask_asgi.ASGI``.  ``uvicorn flask_asgi_app:asgi``.

The fanout clients are created once at startup on the server loop (``@asgi.before_serving``)
and shared by every request. ``/sync-hello`` and ``/sync-sleep`` are plain ``def`` views:
flask-asgi runs them in its worker-thread pool (``FLASK_ASGI_THREADS``).
"""

from __future__ import annotations

import asyncio
import time

from common import (
    HELLO,
    ROWS,
    SLEEP_SECONDS,
    TEMPLATES,
    WAIT_SECONDS,
    fanout_aiohttp,
    fanout_httpx,
    make_aiohttp_session,
    make_httpx_client,
)
from flask import Flask, render_template, request

from flask_asgi import ASGI

app = Flask(__name__, template_folder=str(TEMPLATES))
asgi = ASGI(app)


@asgi.before_serving
async def open_clients() -> None:
    app.extensions["httpx"] = make_httpx_client()
    app.extensions["aiohttp"] = make_aiohttp_session()


@asgi.after_serving
async def close_clients() -> None:
    await app.extensions["httpx"].aclose()
    await app.extensions["aiohttp"].close()


@app.get("/hello")
async def hello():  # type: ignore[no-untyped-def]
    return HELLO


@app.get("/sleep")
async def sleep():  # type: ignore[no-untyped-def]
    await asyncio.sleep(SLEEP_SECONDS)
    return "OK"


@app.get("/wait")
async def wait():  # type: ignore[no-untyped-def]
    await asyncio.sleep(WAIT_SECONDS)  # bench/memory.py: memory per waiting request
    return "OK"


@app.post("/echo")
async def echo():  # type: ignore[no-untyped-def]
    return request.get_json()


@app.get("/fanout")
async def fanout():  # type: ignore[no-untyped-def]
    if request.args.get("client", "httpx") == "aiohttp":
        return await fanout_aiohttp(app.extensions["aiohttp"])
    return await fanout_httpx(app.extensions["httpx"])


@app.get("/fanout-aiohttp")
async def fanout_with_aiohttp():  # type: ignore[no-untyped-def]
    return await fanout_aiohttp(app.extensions["aiohttp"])


@app.get("/template")
async def template():  # type: ignore[no-untyped-def]
    return render_template("table.html", title="Table", rows=ROWS)


# -- sync views (flask-asgi's worker-thread pool) -----------------------------------------


@app.get("/sync-hello")
def sync_hello():  # type: ignore[no-untyped-def]
    return HELLO


@app.get("/sync-sleep")
def sync_sleep():  # type: ignore[no-untyped-def]
    time.sleep(SLEEP_SECONDS)
    return "OK"
