"""A sync endpoint's request: admitted, its body received on the loop, then the whole
request in a worker thread; the answer sent by the loop.

The thread runs :func:`~flask_asgi.protocol.exchange.respond` and never waits for a
client: a small response comes back as two messages, a streamed one is handed over
(``response_feed.py``). Admission: ``FLASK_ASGI_MAX_WAITING`` refuses by count, and
``FLASK_ASGI_QUEUE_TIMEOUT`` by time waited while every thread is busy
(``queue_timeout.py``). A sync view cannot be cancelled; a disconnect only stops its
streaming.
"""

from __future__ import annotations

from concurrent.futures import Executor
from typing import Any

from flask import Flask
from werkzeug.exceptions import ServiceUnavailable

from ..ground.asgi_types import Send
from ..ground.counters import WaitingTicket, counters
from .body import BodyTimeout
from .body_feed import feed_body
from .exchange import CLOSE, Exchange, respond, start_streaming
from .queue_timeout import RETRY_AFTER, all_busy, within_queue_timeout
from .refusal import refuse
from .response_feed import run_responding


async def serve_sync(
    app: Flask, executor: Executor, environ: dict[str, Any], exchange: Exchange, limit: int
) -> None:
    """Serve one sync request with ``executor`` (the pool, or a long-poll's own thread)."""
    messages = await _run_sync(app, executor, environ, exchange, limit)
    if exchange.feed is not None:
        await start_streaming(exchange)
        await exchange.feed.stream(exchange, executor)
    elif messages is not None:
        exchange.finished = True
        await exchange.send(messages[0])
        await exchange.send(messages[1])


async def _run_sync(
    app: Flask,
    executor: Executor,
    environ: dict[str, Any],
    exchange: Exchange,
    buffer_limit: int,
) -> list[dict[str, Any]] | None:
    """A sync endpoint: its body received on the loop, then the whole request in a worker
    thread, unless too many wait for one already (503). None: answered or streamed."""
    max_waiting: int = app.config["FLASK_ASGI_MAX_WAITING"]
    body, send = exchange.body, exchange.send
    if 0 < max_waiting <= counters.waiting:  # refuse before receiving the body, too
        await _refuse_waiting(send)
        return None
    if not body.complete and not await feed_body(app.config, body, environ):
        await refuse(send, BodyTimeout(), [CLOSE])
        return None
    ticket = WaitingTicket(counters)
    try:
        if 0 < max_waiting < counters.waiting:
            ticket.end()
            await _refuse_waiting(send)
            return None
        # A sync view cannot be cancelled; a disconnect only stops its streaming.
        job = run_responding(
            executor,
            exchange,
            _respond_counted,
            ticket,
            app.wsgi_app,
            environ,
            exchange,
            buffer_limit,
        )
        queue_timeout: float = app.config["FLASK_ASGI_QUEUE_TIMEOUT"]
        if not queue_timeout or not all_busy(executor):
            return await job  # a thread is free: no timer to pay for
        return await within_queue_timeout(job, ticket, queue_timeout, send)
    finally:
        ticket.end()  # never taken by a thread (cancelled): no longer waiting either


def _respond_counted(
    ticket: WaitingTicket, wsgi_app: Any, environ: dict[str, Any], exchange: Exchange, limit: int
) -> list[dict[str, Any]] | None:
    if not ticket.end():  # the loop answered 503 while it waited (queue timeout)
        return None
    if exchange.timer is not None:
        exchange.timer.start_threadsafe()  # its request timeout counts from now
    return respond(wsgi_app, environ, exchange, limit, True)


async def _refuse_waiting(send: Send) -> None:
    counters.add("refused_max_waiting_total")
    await refuse(send, ServiceUnavailable(), [RETRY_AFTER])
