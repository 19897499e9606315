"""uvicorn, with a shutdown that loses no request, and a port bound before startup.

uvicorn's own shutdown (0.3x-0.5x) loses requests under load, for two reasons found in
its ``Server.shutdown``: it closes the listening sockets, which resets the connections
still in the kernel's accept queue (clients that connected and sent their request while
the loop was busy), and it closes at once every connection whose last response is
complete, although the next request may already be in the socket, unread (the loop runs
behind its sockets when it is saturated): the kernel answers those with a reset.

:class:`GracefulServer` changes only ``shutdown``:

1. the app's lifecycle goes to ``draining`` (readiness fails) and, for
   ``FLASK_ASGI_DRAIN_DELAY`` seconds, everything else goes on as before;
2. the stop signal is set (streams, SSE and WebSockets end, every response from now on
   carries ``Connection: close``);
3. the accept queue is emptied (those connections are served) before the listening
   sockets close;
4. a connection is closed only once its response is complete *and* no byte of a next
   request is waiting in its socket; a request that is there is served (with
   ``Connection: close``), then uvicorn closes the connection itself;
5. as in uvicorn, in-flight tasks are cancelled after ``timeout_graceful_shutdown``, then
   the lifespan shutdown runs (the background-task drain, then the user's hooks).

It reads uvicorn's ``Server``/protocol attributes (``servers``, ``server_state``,
``cycle``, ``transport``), which uvicorn has kept stable; tests/test_shutdown.py checks it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
from collections.abc import Callable, Iterable
from typing import Any

import uvicorn

from ..ground.counters import counters
from ..ground.lifecycle import Lifecycle
from .options import PortInUse

logger = logging.getLogger("uvicorn.error")

#: Seconds a WebSocket handler gets to close after the stop signal (1001) before uvicorn's
#: own close (1012).
WEBSOCKET_GRACE = 1.0

_NOT_HTTP = object()


def bind(config: uvicorn.Config) -> socket.socket | None:
    """Bind ``config``'s host and port now, before the app's startup hooks run, so that a
    port in use fails at once. None for a Unix socket or a file descriptor (uvicorn's)."""
    if config.uds is not None or config.fd is not None:
        return None
    host = config.host or "127.0.0.1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family=family)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
    try:
        sock.bind((host, config.port))
    except OSError as error:
        sock.close()
        message = f"cannot listen on {host}:{config.port}: {error.strerror or error}"
        if error.errno in (98, 48, 10048):  # EADDRINUSE (Linux, macOS, Windows)
            message += " (is another server running on that port? choose one with --port)"
        raise PortInUse(f"Error: {message}") from None
    sock.set_inheritable(True)
    return sock


class GracefulServer(uvicorn.Server):
    """``uvicorn.Server`` whose shutdown serves every request that reached it first."""

    def __init__(
        self,
        config: uvicorn.Config,
        lifecycles: Iterable[Lifecycle] = (),
        drain_delay: float = 0.0,
        header_timeout: float = 0.0,
        on_started: Callable[[], object] | None = None,
        announce: bool = True,
    ) -> None:
        super().__init__(config)
        self.lifecycles = list(lifecycles)
        self.drain_delay = drain_delay
        self.header_timeout = header_timeout
        #: Called once the startup is done (a supervisor's sign that this process serves).
        self.on_started = on_started
        #: Say "Uvicorn running on ..." (one of several processes leaves it to its parent).
        self.announce = announce
        #: Requests' connections accepted from the queue at shutdown (for the figures).
        self.accepted_at_shutdown = 0
        self._without_request: dict[Any, tuple[Any, float]] = {}

    async def on_tick(self, counter: int) -> bool:
        if self.header_timeout > 0 and counter % 10 == 0:  # once a second
            self._close_slow_headers()
        return await super().on_tick(counter)

    def _close_slow_headers(self) -> None:
        """uvicorn has no timeout for a request's headers: a client may open a connection
        and send its headers a byte at a time (or never), holding the connection and its
        memory forever (slowloris). Close a connection that has had no request in
        progress for ``header_timeout`` seconds since it opened or since its last response
        (an idle keep-alive connection is closed sooner by ``timeout_keep_alive``)."""
        now = asyncio.get_running_loop().time()
        previous = self._without_request
        current: dict[Any, tuple[Any, float]] = {}
        closed = 0
        for conn in self.server_state.connections:
            cycle: Any = getattr(conn, "cycle", _NOT_HTTP)
            if cycle is _NOT_HTTP or (cycle is not None and not cycle.response_complete):
                continue  # a WebSocket, or a request in progress (the body has its timeout)
            seen = previous.get(conn)
            since = seen[1] if seen is not None and seen[0] is cycle else now
            if now - since >= self.header_timeout:
                conn.transport.close()
                closed += 1
            else:
                current[conn] = (cycle, since)
        self._without_request = current
        if closed:
            counters.add("header_timeouts_total", closed)
            logger.warning(
                "Closed %d connection(s) that sent no complete request headers within"
                " FLASK_ASGI_HEADER_TIMEOUT (%gs)",
                closed,
                self.header_timeout,
            )

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if sockets is not None and self.started and self.announce:
            # uvicorn prints "Uvicorn running on ..." only for sockets it bound itself.
            self._log_started_message(sockets)
        if self.started and self.on_started is not None:
            self.on_started()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for lifecycle in self.lifecycles:
            lifecycle.draining()
        if self.drain_delay > 0:
            logger.info("Draining: serving normally for %gs more", self.drain_delay)
            await self._sleep(self.drain_delay)
        logger.info("Shutting down")
        for lifecycle in self.lifecycles:
            lifecycle.stop()
        await self._stop_listening(sockets)
        try:
            async with asyncio.timeout(self.config.timeout_graceful_shutdown):
                await self._drain()
        except TimeoutError:
            tasks = list(self.server_state.tasks)
            logger.error(
                "Cancel %d running task(s), timeout graceful shutdown exceeded", len(tasks)
            )
            for task in tasks:
                task.cancel()
        if not self.force_exit:
            await self.lifespan.shutdown()

    async def _sleep(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while not self.force_exit and loop.time() < end:
            await asyncio.sleep(min(0.1, max(end - loop.time(), 0)))

    async def _stop_listening(self, sockets: list[socket.socket] | None) -> None:
        """Take the connections still queued in the kernel, then stop listening."""
        queued: list[socket.socket] = []
        for server in self.servers:
            for listener in server.sockets:
                queued += _accept_all(listener.fileno())
            server.close()
        for sock in sockets or []:
            sock.close()
        if not queued:
            return
        self.accepted_at_shutdown += len(queued)
        logger.info("Serving %d connection(s) still waiting to be accepted", len(queued))
        loop = asyncio.get_running_loop()
        protocol: Any = self.config.http_protocol_class
        factory = functools.partial(
            protocol,
            config=self.config,
            server_state=self.server_state,
            app_state=self.lifespan.state,
        )
        for conn in queued:
            try:
                await loop.connect_accepted_socket(factory, conn, ssl=self.config.ssl)
            except OSError:
                conn.close()  # the client has gone meanwhile

    async def _drain(self) -> None:
        """Close each connection once it is done; return when none (and no task) is left."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        shut: set[Any] = set()
        state = self.server_state
        while not self.force_exit:
            for conn in list(state.connections):
                cycle: Any = getattr(conn, "cycle", _NOT_HTTP)
                if conn in shut:
                    continue
                if cycle is _NOT_HTTP:  # a WebSocket: its handler had the stop signal
                    if loop.time() - started >= WEBSOCKET_GRACE:
                        shut.add(conn)
                        conn.shutdown()
                elif cycle is None or cycle.response_complete:
                    if not _has_unread_bytes(conn):
                        shut.add(conn)
                        conn.shutdown()  # idle: uvicorn closes it
                else:
                    cycle.keep_alive = False  # close after this response
            if not state.connections and not state.tasks:
                break
            await asyncio.sleep(0.02)
        for server in self.servers:
            await server.wait_closed()


def _accept_all(fd: int) -> list[socket.socket]:
    """Accept every connection waiting on the listening socket ``fd`` (non-blocking)."""
    accepted: list[socket.socket] = []
    listener = socket.socket(fileno=os.dup(fd))  # a second handle: the server owns ``fd``
    try:
        while True:
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            conn.setblocking(False)
            accepted.append(conn)
    finally:
        listener.close()
    return accepted


def _has_unread_bytes(conn: Any) -> bool:
    """Is the start of a next request already in the connection's socket, unread?"""
    transport = getattr(conn, "transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return False
    try:
        probe = socket.socket(fileno=os.dup(sock.fileno()))
    except OSError:
        return False
    try:
        return bool(probe.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))  # b"": EOF
    except OSError:  # BlockingIOError: nothing there
        return False
    finally:
        with contextlib.suppress(OSError):
            probe.close()
