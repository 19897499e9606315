"""asgi.broadcast when Redis fails (issue 21, item 5), against a real redis-server: a frozen
Redis (SIGSTOP) makes publish raise within FLASK_ASGI_BROADCAST_TIMEOUT instead of hanging,
subscribers get a gap signal when the connection is lost, and after a Redis restart the
subscribers are back within about a second; publish says how many received a message."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import pytest
from flask import Flask
from helpers import RedisServer

import flask_asgi
from flask_asgi import BroadcastError, BroadcastGap

TIMEOUT = 0.5  # FLASK_ASGI_BROADCAST_TIMEOUT in these tests


def served(redis_server: RedisServer) -> flask_asgi.ASGI:
    app = Flask(__name__)
    app.config["TESTING"] = True
    app.config["FLASK_ASGI_BROADCAST_URL"] = redis_server.url
    app.config["FLASK_ASGI_BROADCAST_TIMEOUT"] = TIMEOUT
    return flask_asgi.ASGI(app)


async def until_delivered(asgi: flask_asgi.ASGI, subscription: Any, deadline: float) -> float:
    """Publish every 50 ms until the subscription gets one; seconds it took."""
    start = time.monotonic()
    while time.monotonic() < start + deadline:
        try:
            if await asgi.broadcast.publish("room", "ping") >= 1:
                message = await asyncio.wait_for(anext(subscription), 2)
                assert message == "ping"
                return time.monotonic() - start
        except BroadcastError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"no message delivered within {deadline} s")


async def test_publish_returns_how_many_received(redis_server: RedisServer) -> None:
    asgi = served(redis_server)
    async with asgi.serving():
        assert await asgi.broadcast.publish("room", "nobody") == 0
        async with asgi.broadcast.subscribe("room"), asgi.broadcast.subscribe("room"):
            assert await asgi.broadcast.publish("room", "one connection") == 1


async def test_in_process_publish_counts_subscriptions() -> None:
    asgi = flask_asgi.ASGI(Flask(__name__))
    async with asgi.serving():
        assert await asgi.broadcast.publish("room", "x") == 0
        async with asgi.broadcast.subscribe("room"), asgi.broadcast.subscribe("room"):
            assert await asgi.broadcast.publish("room", "x") == 2


async def test_a_frozen_redis_fails_publish_in_time_and_signals_a_gap(
    redis_server: RedisServer,
) -> None:
    asgi = served(redis_server)
    async with asgi.serving(), asgi.broadcast.subscribe("room") as room:
        assert await asgi.broadcast.publish("room", "before") == 1
        assert await asyncio.wait_for(anext(room), 5) == "before"
        os.kill(redis_server.proc.pid, signal.SIGSTOP)
        try:
            start = time.monotonic()
            with pytest.raises(BroadcastError, match="FLASK_ASGI_BROADCAST_TIMEOUT"):
                await asgi.broadcast.publish("room", "while frozen")
            assert time.monotonic() - start < TIMEOUT + 2  # was: as long as TCP lived
            with pytest.raises(BroadcastGap, match="connection lost"):
                await asyncio.wait_for(anext(room), 10)  # ping unanswered: lost
        finally:
            os.kill(redis_server.proc.pid, signal.SIGCONT)
        # Back: the same subscription receives again, without re-entering it.
        assert await until_delivered(asgi, room, deadline=15) < 15


async def test_a_restarted_redis_brings_subscribers_back_within_seconds(
    redis_server: RedisServer,
) -> None:
    asgi = served(redis_server)
    async with asgi.serving():
        async with asgi.broadcast.subscribe("room") as room:
            redis_server.stop()
            with pytest.raises(BroadcastGap):
                await asyncio.wait_for(anext(room), 10)
            with pytest.raises(BroadcastError):
                await asgi.broadcast.publish("room", "while down")
            again = RedisServer(redis_server.binary, port=redis_server.port)
            try:
                again.wait_ready()
                restarted = time.monotonic()
                took = await until_delivered(asgi, room, deadline=10)
                # Reported before: publishes answered for ~2.5 s with 0 of 20 subscribers
                # receiving. Reconnection now backs off at most 1 s.
                print(f"restart -> first delivery: {time.monotonic() - restarted:.2f} s")
                assert time.monotonic() - restarted < 5, took
            finally:
                again.stop()
