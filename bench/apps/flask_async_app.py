"""The benchmark app as Flask ``async def`` views (``flask[async]``) on gunicorn's gthread
worker: ``gunicorn -k gthread --threads 32 flask_async_app:app``.

Flask runs each coroutine with asgiref's ``async_to_sync``: a new event loop per call, the
WSGI thread blocked until it is done. No fanout routes: a client created at startup would
be bound to a loop that no longer exists on the next request.
"""

from __future__ import annotations

import asyncio

from common import HELLO, ROWS, SLEEP_SECONDS, TEMPLATES
from flask import Flask, render_template, request

app = Flask(__name__, template_folder=str(TEMPLATES))


@app.get("/hello")
async def hello():  # type: ignore[no-untyped-def]
    return HELLO


@app.get("/sleep")
async def sleep():  # type: ignore[no-untyped-def]
    await asyncio.sleep(SLEEP_SECONDS)
    return "OK"


@app.post("/echo")
async def echo():  # type: ignore[no-untyped-def]
    return request.get_json()


@app.get("/template")
async def template():  # type: ignore[no-untyped-def]
    return render_template("table.html", title="Table", rows=ROWS)
