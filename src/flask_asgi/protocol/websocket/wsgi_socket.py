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
hop carries neither. Frames written towards the app are masked, as a client's must be, with
the all-zero key: the key only protects intermediaries on a network, and there are none.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from concurrent.futures import Future
from typing import Any

from ...ground.pools import WorkerPool
from .connection import WebSocket, WebSocketDisconnect

_TEXT, _BINARY, _CLOSE, _PING, _PONG, _CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0
_ZERO_MASK = b"\x00\x00\x00\x00"
_READ_SIZE = 65536


def frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked (with the zero key) frame, as a client sends it."""
    size = len(payload)
    if size < 126:
        head = bytes((0x80 | opcode, 0x80 | size))
    elif size < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + size.to_bytes(8, "big")
    return head + _ZERO_MASK + payload


def take_frame(buffer: bytearray) -> tuple[int, bool, bytes] | None:
    """Remove one whole frame from ``buffer``: ``(opcode, fin, payload)``, or None if the
    buffer does not hold a whole frame yet."""
    if len(buffer) < 2:
        return None
    size, at = buffer[1] & 0x7F, 2
    if size == 126:
        if len(buffer) < 4:
            return None
        size, at = int.from_bytes(buffer[2:4], "big"), 4
    elif size == 127:
        if len(buffer) < 10:
            return None
        size, at = int.from_bytes(buffer[2:10], "big"), 10
    mask = b""
    if buffer[1] & 0x80:  # a server's frames are not masked; accept a masked one anyway
        mask, at = bytes(buffer[at : at + 4]), at + 4
    if len(buffer) < at + size:
        return None
    payload = bytes(buffer[at : at + size])
    if mask and mask != _ZERO_MASK:
        key = (mask * (size // 4 + 1))[:size]
        payload = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(
            size, "big"
        )
    opcode, fin = buffer[0] & 0x0F, bool(buffer[0] & 0x80)
    del buffer[: at + size]
    return opcode, fin, payload


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
        self._written = bytearray()  # what the app wrote and the loop has not parsed yet
        self._fragments: list[bytes] = []
        self._fragment_opcode = 0
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
            self._written += data
            if not self.upgraded:
                end = self._written.find(b"\r\n\r\n")
                if end < 0:
                    return
                status, headers = _parse_answer(bytes(self._written[:end]))
                del self._written[: end + 4]
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
            while (taken := take_frame(self._written)) is not None:
                await self._frame_from_app(*taken)

    async def _frame_from_app(self, opcode: int, fin: bool, payload: bytes) -> None:
        if opcode == _PING:
            await self._to_app_end(frame(_PONG, payload))
        elif opcode == _CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1000
            await self._ws.close_async(code, payload[2:].decode("utf-8", "replace"))
        elif opcode in (_TEXT, _BINARY, _CONTINUATION):
            if opcode != _CONTINUATION:
                self._fragment_opcode = opcode
            self._fragments.append(payload)
            if fin:
                whole = b"".join(self._fragments)
                self._fragments.clear()
                text = self._fragment_opcode == _TEXT
                await self._ws.send_async(whole.decode("utf-8") if text else whole)
        # a pong (answering a ping we never send) needs nothing

    async def _to_app_end(self, data: bytes) -> None:
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
                if isinstance(message, str):
                    await self._to_app_end(frame(_TEXT, message.encode("utf-8")))
                else:
                    await self._to_app_end(frame(_BINARY, message))
        except WebSocketDisconnect as closed:
            payload = b""
            if closed.code not in (1005, 1006):  # codes that never go on the wire
                payload = closed.code.to_bytes(2, "big") + closed.reason.encode("utf-8")[:120]
            await self._to_app_end(frame(_CLOSE, payload))
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
