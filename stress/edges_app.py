"""The app ``ws_limits.py`` and ``head_limits.py`` serve: a view to answer, a WebSocket
echo to send oversized messages to. Loopback use only."""

from __future__ import annotations

from flask import Flask

import flask_asgi
from flask_asgi import websocket

app = Flask(__name__)
asgi = flask_asgi.ASGI(app)


@app.get("/async")
async def answer() -> str:
    return "ok"


@asgi.websocket("/ws/echo")
async def echo() -> None:
    async for message in websocket:
        await websocket.send(message)
