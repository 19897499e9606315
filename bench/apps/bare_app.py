"""A bare ASGI callable (no framework): the ceiling of the server, ``uvicorn bare_app:app``.

For every workload other than hello it does the same work by hand: reads and parses the
JSON body, fans out through the same shared clients, renders the same Jinja template.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import jinja2
from common import (
    HELLO,
    ROWS,
    SLEEP_SECONDS,
    TEMPLATES,
    fanout_aiohttp,
    fanout_httpx,
    make_aiohttp_session,
    make_httpx_client,
)

env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=jinja2.select_autoescape()
)
clients: dict[str, Any] = {}

TEXT = [(b"content-type", b"text/plain; charset=utf-8")]
JSON = [(b"content-type", b"application/json")]
HTML = [(b"content-type", b"text/html; charset=utf-8")]


async def respond(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            clients["httpx"] = make_httpx_client()
            clients["aiohttp"] = make_aiohttp_session()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await clients["httpx"].aclose()
            await clients["aiohttp"].close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    path = scope["path"]
    method = scope["method"]
    if path == "/hello" and method == "GET":
        await respond(send, 200, TEXT, HELLO.encode())
    elif path == "/sleep" and method == "GET":
        await asyncio.sleep(SLEEP_SECONDS)
        await respond(send, 200, TEXT, b"OK")
    elif path == "/echo" and method == "POST":
        data = json.loads(await read_body(receive))
        await respond(send, 200, JSON, json.dumps(data).encode())
    elif path == "/fanout" and method == "GET":
        if b"client=aiohttp" in scope["query_string"]:
            data = await fanout_aiohttp(clients["aiohttp"])
        else:
            data = await fanout_httpx(clients["httpx"])
        await respond(send, 200, JSON, json.dumps(data).encode())
    elif path == "/fanout-aiohttp" and method == "GET":
        data = await fanout_aiohttp(clients["aiohttp"])
        await respond(send, 200, JSON, json.dumps(data).encode())
    elif path == "/template" and method == "GET":
        html = env.get_template("table.html").render(title="Table", rows=ROWS)
        await respond(send, 200, HTML, html.encode())
    else:
        await respond(send, 404, TEXT, b"Not Found")
