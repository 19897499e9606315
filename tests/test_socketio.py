"""Socket.IO beside Flask on one port (examples/socketio_chat.py), with python-socketio's
real client against a real ``flask serve``: both transports, rooms, emits from an async and
from a sync Flask view, and across two server processes through Redis."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from typing import Any

import httpx
import pytest
import socketio
from helpers import ROOT, VENV_BIN, RedisServer, free_port, wait_for

EXAMPLE = "examples/socketio_chat.py"
#: A long-poll still open at the end is cut after 3 s instead of the default 10.
OPTIONS = ["--log-level", "warning", "--timeout-graceful-shutdown", "3"]


class Client:
    """A python-socketio ``AsyncClient`` that queues every event it receives."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.sio.on("*", self.record)

    async def record(self, event: str, data: Any) -> None:
        await self.events.put((event, data))

    async def connect(self, base_url: str, name: str, transport: str) -> dict[str, Any]:
        await self.sio.connect(
            base_url, transports=[transport], auth={"name": name}, wait_timeout=20
        )
        assert self.sio.transport() == transport
        event, welcome = await self.next()
        assert event == "welcome" and welcome["name"] == name
        return dict(welcome)

    async def close(self) -> None:
        # python-socketio's client waits for its pending long-poll to return (the server's
        # ping interval, 25 s) before a polling disconnect ends, on any ASGI server.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.sio.disconnect(), 3)

    async def next(self) -> tuple[str, Any]:
        return await asyncio.wait_for(self.events.get(), 20)


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_events_from_async_and_sync_views_while_flask_answers(
    cli_server: Any, transport: str
) -> None:
    server = cli_server(EXAMPLE, extra=OPTIONS)

    async def scenario() -> None:
        ann, bob = Client(), Client()
        async with httpx.AsyncClient(base_url=server.base_url, timeout=20) as http:
            try:
                await ann.connect(server.base_url, "ann", transport)
                await bob.connect(server.base_url, "bob", transport)
                assert await ann.sio.call("join", "lobby", timeout=20) == {"room": "lobby"}
                assert await ann.next() == ("joined", {"name": "ann", "room": "lobby"})

                # A Flask route on the same port, while the Socket.IO sessions are open.
                assert (await http.get("/")).json()["socketio"] == "/socket.io"

                # The async view emits to a room: only ann is in it.
                answer = await http.post("/rooms/lobby/announce", json={"text": "to lobby"})
                assert answer.json()["sent"] is True
                to_lobby = {"text": "to lobby", "from": "async view"}
                assert await ann.next() == ("announcement", to_lobby)

                # The sync view (a worker thread) emits to everyone, through await_.
                assert (await http.post("/announce", json={"text": "to all"})).status_code == 200
                to_all = {"text": "to all", "from": "sync view"}
                assert await ann.next() == ("announcement", to_all)
                assert await bob.next() == ("announcement", to_all)  # not the room's first

                await ann.sio.emit("message", {"room": "lobby", "text": "hi"})
                assert await ann.next() == ("message", {"name": "ann", "text": "hi"})
                assert (await http.get("/nowhere")).status_code == 404  # Flask's own 404
                assert bob.events.empty()
            finally:
                await ann.close()
                await bob.close()

    asyncio.run(scenario())


def test_emits_reach_clients_of_another_process_through_redis(
    cli_server: Any, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``--workers N`` or several hosts need: with SOCKETIO_MESSAGE_QUEUE, an emit in one
    ``flask serve`` process reaches a client connected to another."""
    monkeypatch.setenv("SOCKETIO_MESSAGE_QUEUE", redis_server.url)
    one = cli_server(EXAMPLE, extra=OPTIONS)
    two = cli_server(EXAMPLE, extra=OPTIONS)

    async def scenario() -> None:
        ann = Client()
        try:
            welcome = await ann.connect(one.base_url, "ann", "websocket")
            assert await ann.sio.call("join", "lobby", timeout=20) == {"room": "lobby"}
            assert (await ann.next())[0] == "joined"
            async with httpx.AsyncClient(base_url=two.base_url, timeout=20) as http:
                answer = (await http.post("/announce", json={"text": "from two"})).json()
                assert answer["pid"] != welcome["pid"]  # emitted by the other process
                assert await ann.next() == (
                    "announcement",
                    {"text": "from two", "from": "sync view"},
                )
                await http.post("/rooms/lobby/announce", json={"text": "room"})
                assert await ann.next() == ("announcement", {"text": "room", "from": "async view"})
        finally:
            await ann.close()

    asyncio.run(scenario())


def test_uvicorn_serves_the_mount_with_no_change(tmp_path: Any) -> None:
    """``uvicorn module:asgi``: the mount is part of the ASGI callable itself."""
    port = free_port()
    command = [str(VENV_BIN / "uvicorn"), "--app-dir", str(ROOT / "examples"), "socketio_chat:asgi"]
    proc = subprocess.Popen(
        [*command, "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(base + "/", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        assert wait_for(up, timeout=30)
        handshake = httpx.get(base + "/socket.io/?EIO=4&transport=polling", timeout=10)
        assert handshake.status_code == 200 and '"sid"' in handshake.text  # Engine.IO's open
    finally:
        proc.terminate()
        proc.wait(15)
