"""The benchmark app on Starlette (served by uvicorn): ``uvicorn starlette_app:app``.
The ceiling of an async framework on the same server."""

from __future__ import annotations

import asyncio
import contextlib

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
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.templating import Jinja2Templates

templates = Jinja2Templates(directory=str(TEMPLATES))


@contextlib.asynccontextmanager
async def lifespan(app: Starlette):  # type: ignore[no-untyped-def]
    app.state.httpx = make_httpx_client()
    app.state.aiohttp = make_aiohttp_session()
    yield
    await app.state.httpx.aclose()
    await app.state.aiohttp.close()


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse(HELLO)


async def sleep(request: Request) -> PlainTextResponse:
    await asyncio.sleep(SLEEP_SECONDS)
    return PlainTextResponse("OK")


async def wait(request: Request) -> PlainTextResponse:
    await asyncio.sleep(WAIT_SECONDS)
    return PlainTextResponse("OK")


async def echo(request: Request) -> JSONResponse:
    return JSONResponse(await request.json())


async def fanout(request: Request) -> JSONResponse:
    if request.query_params.get("client", "httpx") == "aiohttp":
        return JSONResponse(await fanout_aiohttp(request.app.state.aiohttp))
    return JSONResponse(await fanout_httpx(request.app.state.httpx))


async def fanout_with_aiohttp(request: Request) -> JSONResponse:
    return JSONResponse(await fanout_aiohttp(request.app.state.aiohttp))


async def template(request: Request):  # type: ignore[no-untyped-def]
    return templates.TemplateResponse(request, "table.html", {"title": "Table", "rows": ROWS})


app = Starlette(
    routes=[
        Route("/hello", hello),
        Route("/sleep", sleep),
        Route("/wait", wait),
        Route("/echo", echo, methods=["POST"]),
        Route("/fanout", fanout),
        Route("/fanout-aiohttp", fanout_with_aiohttp),
        Route("/template", template),
    ],
    lifespan=lifespan,
)
