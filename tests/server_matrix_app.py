"""The app tests/test_servers.py serves on every ASGI server (imported by the server process).

``MATRIX_MARKER`` names a file that the lifespan hooks append to, so a test can see that
startup ran before the first request and shutdown ran after the last one.
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import os
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from flask import Flask, current_app, request, send_file, session
from flask_sock import Sock
from flask_socketio import SocketIO, emit

import flask_asgi
from flask_asgi import ServerSentEvent, websocket

app = Flask(__name__)
app.secret_key = "matrix"
asgi = flask_asgi.ASGI(app)


def _mark(line: str) -> None:
    marker = os.environ.get("MATRIX_MARKER")
    if marker:
        with open(marker, "a") as file:
            file.write(line + "\n")


@asgi.before_serving
async def started() -> None:
    current_app.config["SERVING_LOOP"] = id(asyncio.get_running_loop())
    _mark("started")


@asgi.after_serving
async def stopped() -> None:
    _mark("stopped")


def _digest() -> dict[str, Any]:
    body = request.get_data()
    return {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}


@app.get("/ready")
def ready() -> str:
    return "ok"


@app.get("/info")
async def info() -> dict[str, Any]:
    await asyncio.sleep(float(request.args.get("s", "0")))
    return {
        "pid": os.getpid(),
        "script_root": request.script_root,
        "path": request.path,
        "loop": type(asyncio.get_running_loop()).__module__,
    }


@app.get("/async")
async def async_view() -> dict[str, Any]:
    await asyncio.sleep(0.001)
    return {
        "kind": "async",
        "on_serving_loop": id(asyncio.get_running_loop()) == current_app.config["SERVING_LOOP"],
    }


@app.get("/sync")
def sync_view() -> dict[str, Any]:
    return {"kind": "sync", "thread": threading.current_thread().name}


@app.post("/echo-async")
async def echo_async() -> dict[str, Any]:
    await asyncio.sleep(0)
    return _digest()


@app.post("/echo-sync")
def echo_sync() -> dict[str, Any]:
    return _digest()


@app.get("/stream-sync")
def stream_sync() -> Any:
    def chunks() -> Iterator[str]:
        for i in range(100):
            yield f"{i:03d}|"

    return app.response_class(chunks(), mimetype="text/plain")


#: 5 MB for /big-file: clients that request it and never read (tests/test_servers.py).
_BIG_FILE = os.path.join(tempfile.gettempdir(), f"flask-asgi-matrix-{os.getpid()}.bin")
with open(_BIG_FILE, "wb") as _file:
    _file.write(b"x" * 5 * 1024 * 1024)
atexit.register(os.remove, _BIG_FILE)


@app.get("/big-file")
def big_file() -> Any:
    return send_file(_BIG_FILE)


@app.get("/stream-async")
async def stream_async() -> Any:
    async def chunks() -> AsyncIterator[str]:
        for i in range(100):
            if i % 10 == 0:
                await asyncio.sleep(0.001)
            yield f"{i:03d}|"

    return app.response_class(flask_asgi.stream(chunks()), mimetype="text/plain")


@app.get("/sse")
async def sse() -> Any:
    async def events() -> AsyncIterator[Any]:
        for n in range(3):
            await asyncio.sleep(0.01)
            yield ServerSentEvent(data={"n": n}, event="tick", id=n)

    return flask_asgi.event_stream(events())


@app.get("/slow")
async def slow() -> str:
    _mark("slow-started")
    await asyncio.sleep(float(request.args.get("s", "1")))
    _mark("slow-finished")
    return "finished"


@app.get("/slow-sync")
def slow_sync() -> str:
    _mark("slow-started")
    time.sleep(float(request.args.get("s", "1")))
    _mark("slow-finished")
    return "finished"


@asgi.websocket("/ws/echo")
async def ws_echo() -> None:
    async for message in websocket:
        if message == "close":
            await websocket.close(4001, "bye")
            return
        await websocket.send(message)


@asgi.websocket("/ws/echo-sync")
def ws_echo_sync() -> None:
    for message in websocket:
        if message == "close":
            websocket.close(4002, "bye-sync")
            return
        websocket.send(message)


sock = Sock(app)


@sock.route("/ws/flask-sock")
def ws_flask_sock(ws: Any) -> None:
    # Flask-Sock, unchanged: simple-websocket on environ["werkzeug.socket"] (issue 19).
    while True:
        message = ws.receive()
        if message == "close":
            ws.close(4003, "bye-sock")
            return
        ws.send(message)


@asgi.websocket("/ws/refused")
async def ws_refused() -> Any:
    return "no entry", 401, {"X-Refused": "yes"}


# Flask-SocketIO, unchanged (threading mode): its middleware wraps app.wsgi_app (issue 19).
socketio = SocketIO(app)


@socketio.on("connect")
def sio_connect(auth: Any) -> None:
    session["name"] = (auth or {}).get("name", "anon")


@socketio.on("echo")
def sio_echo(data: Any) -> dict[str, Any]:
    # The ack: what a sync handler sees, as on Werkzeug's server.
    return {
        "data": data,
        "sid": request.sid,  # type: ignore[attr-defined]
        "name": session.get("name"),
        "thread": threading.current_thread() is not threading.main_thread(),
    }


@socketio.on("shout")
def sio_shout(data: Any) -> None:
    emit("shouted", data, broadcast=True)


@app.post("/sio/announce")
def sio_announce() -> str:
    # An emit from an ordinary sync HTTP view reaches every connected client.
    socketio.emit("announced", request.get_json())
    return "sent"
