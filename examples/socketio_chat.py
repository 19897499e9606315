"""Socket.IO on the same port as Flask: python-socketio's AsyncServer mounted at /socket.io.

    pip install 'flask-asgi[socketio]'
    flask --app examples/socketio_chat.py serve --port 8000

Socket.IO clients connect to http://127.0.0.1:8000 (path /socket.io), join rooms and chat;
Flask views on the same server push announcements: ``POST /rooms/<room>/announce`` from an
async view (``await sio.emit``), ``POST /announce`` from a sync view
(``flask_asgi.await_(sio.emit(...))``). With several processes (``--workers 2``) or hosts,
set SOCKETIO_MESSAGE_QUEUE=redis://127.0.0.1:6379/0 so that an emit in one process reaches
the clients of every process (docs/socketio.md).
"""

from __future__ import annotations

import os
from typing import Any

import socketio
from flask import Flask, request

import flask_asgi
from flask_asgi import ASGI

queue = os.environ.get("SOCKETIO_MESSAGE_QUEUE")
sio = socketio.AsyncServer(
    async_mode="asgi",
    client_manager=socketio.AsyncRedisManager(queue) if queue else None,
    cors_allowed_origins=[],  # same origin only
)

app = Flask(__name__)
asgi = ASGI(app)
asgi.mount("/socket.io", socketio.ASGIApp(sio))  # the path its clients use by default


# -- Socket.IO events (python-socketio's API) -------------------------------------------------


@sio.event
async def connect(sid: str, environ: dict[str, Any], auth: Any) -> None:
    name = str((auth or {}).get("name") or "anonymous")[:32]
    await sio.save_session(sid, {"name": name})
    await sio.emit("welcome", {"name": name, "pid": os.getpid()}, to=sid)


@sio.event
async def join(sid: str, room: str) -> dict[str, str]:
    await sio.enter_room(sid, room)
    session = await sio.get_session(sid)
    await sio.emit("joined", {"name": session["name"], "room": room}, to=room)
    return {"room": room}  # the client's callback (ack) gets this


@sio.event
async def leave(sid: str, room: str) -> None:
    await sio.leave_room(sid, room)


@sio.event
async def message(sid: str, data: dict[str, str]) -> None:
    session = await sio.get_session(sid)
    event = {"name": session["name"], "text": str(data.get("text", ""))[:1000]}
    await sio.emit("message", event, to=str(data.get("room", "lobby")))


# -- Flask views on the same port ----------------------------------------------------------------


@app.get("/")
def index() -> dict[str, Any]:
    return {"socketio": "/socket.io", "pid": os.getpid()}


@app.post("/rooms/<room>/announce")
async def announce_to_room(room: str) -> dict[str, Any]:
    text = (request.get_json(silent=True) or {}).get("text", "")
    await sio.emit("announcement", {"text": text, "from": "async view"}, to=room)
    return {"sent": True, "pid": os.getpid()}


@app.post("/announce")
def announce_to_everyone() -> dict[str, Any]:
    # A sync view runs in a worker thread: await_ runs the emit on the server's loop.
    text = (request.get_json(silent=True) or {}).get("text", "")
    flask_asgi.await_(sio.emit("announcement", {"text": text, "from": "sync view"}))
    return {"sent": True, "pid": os.getpid()}
