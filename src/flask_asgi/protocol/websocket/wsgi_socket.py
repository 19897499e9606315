"""``environ["werkzeug.socket"]`` for a WebSocket handshake: WSGI WebSocket code runs unchanged.

Under Werkzeug's development server a WSGI app that wants a WebSocket takes the raw
connection from ``environ["werkzeug.socket"]``, writes the ``101`` answer on it and then
speaks RFC 6455 frames. simple-websocket does exactly this (``simple_websocket.Server``
reads ``werkzeug.socket`` first), and through it Flask-Sock and Flask-SocketIO's threading
mode (python-engineio's WebSocket transport). An ASGI server owns the real connection and
exchanges whole messages with the app, so flask-asgi hands such code a stand-in,
:class:`UpgradeSocket`:

* what the app *writes* (its ``101`` answer, then server frames) is read on the server
  loop, synchronously with the write: the ``101`` becomes ``websocket.accept`` (with the
  subprotocol it chose), each data frame a ``websocket.send``, a close frame
  ``websocket.close``, a ping is answered with a pong;
* what the client *sends* (messages from flask-asgi's :class:`~.connection.WebSocket`) is
  framed and written into one end of a local socket pair whose other end the app reads, so
  blocking ``recv()``, timeouts and ``select()`` (simple-websocket's ping thread) are a real
  kernel socket's.

The ASGI server negotiated compression and answers the client's pings, so the in-process
hop carries neither. The framing both ways is wsproto's (``FrameProtocol``, as a client):
frames towards the app are masked with a fresh random key, as a client's must be, and what
the app writes is checked as a client library checks it. A frame no client would accept (a
masked one, a bad length, text that is not UTF-8...) fails the connection as such a client
would: it is closed with the code that says why (``1002``, ``1007``), the app reads a close
frame, then the end of its socket, and its later writes fail.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from concurrent.futures import Future
from typing import Any

# wsproto is a base dependency (pyproject.toml): any WSGI app may take werkzeug.socket, not
# only simple-websocket's users (who have wsproto through it). It is small, pure Python, and
# its one dependency, h11, is uvicorn's too.
from wsproto.frame_protocol import CloseReason, Frame, FrameProtocol, Opcode, ParseFailed

from ...ground.pools import WorkerPool
from .connection import WebSocket, WebSocketDisconnect

logger = logging.getLogger("flask_asgi")


def _parse_answer(head: bytes) -> tuple[int, dict[str, str]]:
    """The status and headers (lower-cased names) of the app's HTTP answer."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    return status, headers


class UpgradeSocket:
    """The connection as WSGI WebSocket code sees it in ``environ["werkzeug.socket"]``.

    Nothing is set up until the app touches it (most handshakes never do). ``send`` and
    ``sendall`` hand the bytes to the server loop and return once they are sent on as ASGI
    messages; every other socket method is the app's end of a local socket pair.
    """

    def __init__(self, ws: WebSocket, loop: asyncio.AbstractEventLoop) -> None:
        self._ws = ws
        self._loop = loop
        self._lock = threading.Lock()
        self._app_end: socket.socket | None = None
        self._our_end: socket.socket | None = None
        self._written = bytearray()  # the app's answer, until its end is written
        # The client's end of the hop: it frames what the client sends (masked) and parses
        # what the app writes (pieces of a message as they come, then the whole message).
        self._frames = FrameProtocol(client=True, extensions=[])
        self._message: list[Any] = []  # the pieces (str or bytes) of an unfinished message
        self._failed = False  # the app wrote what no client accepts: later writes fail
        self._writing = asyncio.Lock()
        self._pump: asyncio.Task[None] | None = None
        #: The app answered ``101``: the connection is the app's (engineio then raises).
        self.upgraded = False
        #: The worker pool whose thread runs the app (a sync WebSocket route), if any: that
        #: thread is lent to the connection from the upgrade to the end (``send`` lends it,
        #: in that thread, once the ``101`` is out).
        self.pool: WorkerPool | None = None
        self._lent = False
        self._finished = False

    # -- the app's side (any thread but the loop's) ----------------------------------------

    def _end(self) -> socket.socket:
        with self._lock:
            if self._app_end is None:
                self._app_end, self._our_end = socket.socketpair()
                self._our_end.setblocking(False)
            return self._app_end

    def send(self, data: bytes, flags: int = 0) -> int:
        """Pass what the app writes to the client (its answer, then frames)."""
        self._end()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            raise RuntimeError(
                "environ['werkzeug.socket'] is blocking I/O: use it from a sync view or"
                " handler (a worker thread), not from the event loop"
            )
        passed = self._written_by_app(bytes(data))
        try:
            done: Future[None] = asyncio.run_coroutine_threadsafe(passed, self._loop)
        except RuntimeError:  # the loop is closed: the server has stopped
            passed.close()
            raise BrokenPipeError("the server has stopped") from None
        try:
            done.result()
        except WebSocketDisconnect:
            raise BrokenPipeError("the WebSocket connection is closed") from None
        if self.upgraded and self.pool is not None and not self._lent:
            with self._lock:
                lend = not self._lent and not self._finished
                self._lent = self._lent or lend
            if lend:
                self.pool.lend()  # in the app's thread: it may start a thread
        return len(data)

    def sendall(self, data: bytes, flags: int = 0) -> None:
        self.send(data, flags)

    def close(self) -> None:
        if self._app_end is not None:
            self._app_end.close()

    def __getattr__(self, name: str) -> Any:
        # recv, fileno (for select), settimeout, shutdown...: the real socket's.
        return getattr(self._end(), name)

    # -- the loop's side --------------------------------------------------------------------

    async def _written_by_app(self, data: bytes) -> None:
        async with self._writing:  # writes from several threads go out in their order
            if self._failed:
                raise WebSocketDisconnect(CloseReason.PROTOCOL_ERROR)
            if self.upgraded:
                self._frames.receive_bytes(data)
            else:
                self._written += data
                end = self._written.find(b"\r\n\r\n")
                if end < 0:
                    return
                status, headers = _parse_answer(bytes(self._written[:end]))
                if status != 101:
                    raise RuntimeError(
                        f"the app wrote a {status} answer on environ['werkzeug.socket'];"
                        " return a WSGI response to refuse a WebSocket handshake"
                    )
                await self._ws.accept_async(headers.get("sec-websocket-protocol") or None)
                self.upgraded = True
                self._pump = self._loop.create_task(
                    self._to_app(), name="flask-asgi-werkzeug-socket"
                )
                self._frames.receive_bytes(bytes(self._written[end + 4 :]))
                self._written.clear()
            try:
                for frame in self._frames.received_frames():
                    await self._frame_from_app(frame)
            except ParseFailed as failed:
                # What a client library does with such a frame: fail the connection.
                self._failed = True
                logger.warning(
                    "%s: the app wrote an invalid WebSocket frame on"
                    " environ['werkzeug.socket'] (%s); the connection is closed with %d",
                    self._ws.path,
                    failed,
                    failed.code,
                )
                reason = str(failed).encode("utf-8")[:123].decode("utf-8", "ignore")
                await self._ws.close_async(int(failed.code), reason)

    async def _frame_from_app(self, frame: Frame) -> None:
        """One frame, or a piece of one, that the app wrote (wsproto checked it)."""
        if frame.opcode is Opcode.PING:
            assert isinstance(frame.payload, bytes)
            await self._to_app_end(self._frames.pong(frame.payload))
        elif frame.opcode is Opcode.CLOSE:
            assert isinstance(frame.payload, tuple)
            code, reason = frame.payload
            # A close frame without a code (1005) has none to pass on: ASGI's default.
            await self._ws.close_async(1000 if code == 1005 else int(code), reason)
        elif frame.opcode is Opcode.TEXT or frame.opcode is Opcode.BINARY:
            # Every piece of a message carries its first frame's opcode; text comes decoded.
            self._message.append(frame.payload)
            if frame.message_finished:
                pieces, self._message = self._message, []
                text = frame.opcode is Opcode.TEXT
                await self._ws.send_async("".join(pieces) if text else b"".join(pieces))
        # a pong (answering a ping we never send) needs nothing

    async def _to_app_end(self, data: bytes | bytearray) -> None:
        assert self._our_end is not None
        try:
            await self._loop.sock_sendall(self._our_end, data)
        except OSError:
            pass  # the app closed its end: it has stopped reading

    async def _to_app(self) -> None:
        """The client's messages, as frames, to the app; then the client's close."""
        try:
            while True:
                message = await self._ws.receive_async()
                await self._to_app_end(self._frames.send_data(message))
        except WebSocketDisconnect as closed:
            if closed.code in (1005, 1006):  # codes that never go on the wire: no code
                await self._to_app_end(self._frames.close())
            else:
                await self._to_app_end(self._frames.close(closed.code, closed.reason))
        finally:
            if self._our_end is not None:
                try:
                    self._our_end.shutdown(socket.SHUT_WR)  # the app reads to its end
                except OSError:
                    pass

    async def finish(self) -> None:
        """After the app returned: stop passing messages, release both ends, give the
        worker back."""
        with self._lock:  # never held while a thread starts (send lends outside it)
            lent, self._lent, self._finished = self._lent, False, True
        if lent and self.pool is not None:
            self.pool.give_back()
        if self._pump is not None and not self._pump.done():
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
        for end in (self._our_end, self._app_end):
            if end is not None:
                end.close()
