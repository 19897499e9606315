"""The benchmark app on Quart (served by uvicorn): ``uvicorn quart_app:app``."""

from __future__ import annotations

import asyncio

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
from quart import Quart, render_template, request

app = Quart(__name__, template_folder=str(TEMPLATES))


@app.before_serving
async def open_clients() -> None:
    app.extensions["httpx"] = make_httpx_client()
    app.extensions["aiohttp"] = make_aiohttp_session()


@app.after_serving
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
    await asyncio.sleep(WAIT_SECONDS)
    return "OK"


@app.post("/echo")
async def echo():  # type: ignore[no-untyped-def]
    return await request.get_json()


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
    return await render_template("table.html", title="Table", rows=ROWS)
