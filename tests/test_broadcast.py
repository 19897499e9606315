"""asgi.broadcast: the in-process backend, the Redis backend against a real redis-server,
and examples/chat.py served by two processes that share Redis."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from flask import Flask
from helpers import EXAMPLES, RedisServer, free_port
from websockets.asyncio.client import connect

import flask_asgi
from flask_asgi import websocket
from flask_asgi.features.broadcast_redis import RedisBackend

# -- the in-process backend ----------------------------------------------------------------


async def next_message(subscription: Any, timeout: float = 10) -> Any:
    return await asyncio.wait_for(anext(subscription), timeout)


async def test_publish_and_subscribe(asgi: flask_asgi.ASGI) -> None:
    broadcast = asgi.broadcast
    async with broadcast.subscribe("a") as a1, broadcast.subscribe("a") as a2:
        async with broadcast.subscribe("b") as b:
            await broadcast.publish("a", "text")
            await broadcast.publish("a", b"\x00bytes")
            await broadcast.publish("b", "for b")
            assert [await next_message(a1), await next_message(a1)] == ["text", b"\x00bytes"]
            assert [await next_message(a2), await next_message(a2)] == ["text", b"\x00bytes"]
            assert await next_message(b) == "for b"
        await broadcast.publish("b", "nobody listens")  # no subscriber: dropped
        with pytest.raises(TypeError):
            await broadcast.publish("a", {"not": "text"})  # type: ignore[arg-type]
    # Leaving the block unsubscribed: iteration is over.
    assert [message async for message in a1] == []


async def test_a_slow_subscriber_loses_the_oldest_messages(
    asgi: flask_asgi.ASGI, caplog: pytest.LogCaptureFixture
) -> None:
    async with asgi.broadcast.subscribe("fast", max_queue=2) as subscription:
        for n in range(5):
            await asgi.broadcast.publish("fast", str(n))
        assert [await next_message(subscription), await next_message(subscription)] == ["3", "4"]
    assert "too slow" in caplog.text


async def test_shutdown_ends_subscriptions(app: Flask, asgi: flask_asgi.ASGI) -> None:
    async with asgi.serving():  # lifespan: the broadcast starts, and stops at shutdown
        subscription = asgi.broadcast.subscribe("news")
        await subscription.__aenter__()
        await asgi.broadcast.publish("news", "first")
    assert [message async for message in subscription] == ["first"]


def test_chat_between_test_client_connections() -> None:
    chat = load_example()
    client = chat.app.test_client()
    with client.websocket("/ws/den?name=ann") as ann:
        assert ann.receive_json() == {"type": "join", "name": "ann"}
        with client.websocket("/ws/den?name=bob") as bob:
            assert bob.receive_json() == {"type": "join", "name": "bob"}
            assert ann.receive_json() == {"type": "join", "name": "bob"}
            bob.send("hello")
            expected = {"type": "message", "name": "bob", "text": "hello"}
            assert ann.receive_json() == bob.receive_json() == expected
        assert ann.receive_json() == {"type": "leave", "name": "bob"}
    assert client.get("/?room=den").text.count("ws://localhost/ws/den") == 1


def test_sync_handler_subscription(app: Flask, asgi: flask_asgi.ASGI, client: Any) -> None:
    @asgi.websocket("/feed")
    def feed() -> None:  # a sync handler: the same objects, blocking
        with asgi.broadcast.subscribe("feed") as subscription:
            websocket.send("ready")
            for message in subscription:
                websocket.send(message)
                if message == "last":
                    break

    @app.post("/publish")
    def publish() -> str:
        from flask import request

        flask_asgi.await_(asgi.broadcast.publish("feed", request.get_data(as_text=True)))
        return "sent"

    with client.websocket("/feed") as ws:
        assert ws.receive() == "ready"
        for text in ("one", "last"):
            assert client.post("/publish", data=text).text == "sent"
            assert ws.receive() == text


async def test_publish_from_another_loop(
    app: Flask, asgi: flask_asgi.ASGI, live_server: Any
) -> None:
    @asgi.websocket("/listen")
    async def listen() -> None:
        async with asgi.broadcast.subscribe("alerts") as subscription:
            await websocket.send("ready")
            await websocket.send(await anext(subscription))

    base = live_server(asgi).replace("http://", "ws://")  # the broadcast starts on its loop
    async with connect(base + "/listen") as ws:
        assert await ws.recv() == "ready"
        # The test's own loop: the call is handed to the server's loop.
        await asgi.broadcast.publish("alerts", "fire")
        assert await asyncio.wait_for(ws.recv(), 10) == "fire"


# -- Redis -------------------------------------------------------------------------------


async def test_redis_backend(app: Flask, asgi: flask_asgi.ASGI, redis_server: RedisServer) -> None:
    import redis.asyncio

    app.config["FLASK_ASGI_BROADCAST_URL"] = redis_server.url
    broadcast = asgi.broadcast
    async with asgi.serving():  # connects at startup
        assert isinstance(broadcast._bound.backend, RedisBackend)  # type: ignore[union-attr]
        async with broadcast.subscribe("room") as room, broadcast.subscribe("other") as other:
            await broadcast.publish("room", "text é")
            await broadcast.publish("room", b"\xff\x00binary")
            await broadcast.publish("other", b"plain bytes")
            assert await next_message(room) == "text é"
            assert await next_message(room) == b"\xff\x00binary"
            assert await next_message(other) == b"plain bytes"

            # Any Redis publisher reaches the subscribers (text arrives as str).
            outside = redis.asyncio.Redis.from_url(redis_server.url)
            try:
                assert await outside.publish("room", "from redis-cli") == 1  # one connection
            finally:
                await outside.aclose()
            assert await next_message(room) == "from redis-cli"

        async with broadcast.subscribe("room") as room:  # subscribing again works
            await broadcast.publish("room", "again")
            assert await next_message(room) == "again"
        subscription = broadcast.subscribe("kept")
        await subscription.__aenter__()
    # Shutdown closed the connections and ended the subscription left open.
    assert [message async for message in subscription] == []
    assert broadcast._bound is None


async def test_unreachable_redis_fails_startup(app: Flask, asgi: flask_asgi.ASGI) -> None:
    pytest.importorskip("redis")
    app.config["FLASK_ASGI_BROADCAST_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    asgi.broadcast  # noqa: B018 - created before startup: it connects then
    with pytest.raises(RuntimeError, match="(?i)connect"):
        async with asgi.serving():
            pass


def test_chat_across_two_server_processes(
    cli_server: Any, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message sent through one ``flask serve`` process reaches a socket held by another."""
    monkeypatch.setenv("FLASK_ASGI_BROADCAST_URL", redis_server.url)
    one = cli_server("examples/chat.py", extra=["--log-level", "warning"])
    two = cli_server("examples/chat.py", extra=["--log-level", "warning"])

    async def conversation() -> None:
        def url(server: Any, name: str) -> str:
            return server.base_url.replace("http://", "ws://") + f"/ws/lobby?name={name}"

        async def receive(ws: Any) -> Any:
            return json.loads(await asyncio.wait_for(ws.recv(), 10))

        async with connect(url(one, "ann")) as ann:
            # ann's own join came back through Redis: her subscription is live.
            assert await receive(ann) == {"type": "join", "name": "ann"}
            async with connect(url(two, "bob")) as bob:
                assert await receive(bob) == {"type": "join", "name": "bob"}
                assert await receive(ann) == {"type": "join", "name": "bob"}  # process two
                await bob.send("hello from two")
                message = {"type": "message", "name": "bob", "text": "hello from two"}
                assert await receive(ann) == message
                assert await receive(bob) == message
                await ann.send("hi from one")
                message = {"type": "message", "name": "ann", "text": "hi from one"}
                assert await receive(bob) == message
                assert await receive(ann) == message
            assert await receive(ann) == {"type": "leave", "name": "bob"}

    asyncio.run(conversation())
    page = httpx.get(one.base_url + "/?room=lobby", timeout=10)
    assert f"ws://127.0.0.1:{one.port}/ws/lobby" in page.text


# -- helpers -------------------------------------------------------------------------------

_loaded = 0


def load_example(name: str = "chat") -> ModuleType:
    """A fresh copy of ``examples/<name>.py`` (its own app and ASGI object)."""
    global _loaded
    _loaded += 1
    path = Path(EXAMPLES) / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_example_{name}_{_loaded}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
