"""One WebSocket connection as its handler sees it: :class:`WebSocket`, behind the
context-local :data:`websocket` proxy, and :class:`WebSocketDisconnect`.

The I/O methods work from an ``async def`` handler (coroutines on the loop) and from a
sync handler's worker thread (blocking calls through ``await_``). A reader task takes
client messages ahead of the handler, so a disconnect, an oversized message or an idle
timeout is noticed whatever the handler is doing.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from flask import Flask
from werkzeug.datastructures import Headers
from werkzeug.local import LocalProxy

from ...ground.app_state import lifecycle_of
from ...ground.asgi_types import Receive, Send
from ...ground.bridge import await_
from ...ground.websocket_needs_asgi import WebSocketNeedsASGI, reached_without_connection

if TYPE_CHECKING:
    from werkzeug.datastructures import ImmutableMultiDict, MultiDict

T = TypeVar("T")

Message = str | bytes

#: ASGI extension through which a server lets the app answer a handshake with HTTP.
HTTP_RESPONSE_EXTENSION = "websocket.http.response"

#: Client messages read ahead of the handler (beyond this the server's flow control applies).
_INBOX_LIMIT = 16

_END = object()  # the inbox's end marker: the connection is closed


class WebSocketDisconnect(Exception):
    """The WebSocket connection is closed: the client left, the server closed it (idle
    timeout or shutdown ``1001``, oversized message ``1009``), or the handler closed it.

    ``code`` is the close code (``1005`` when the client sent none, ``1006`` when the
    connection dropped), ``reason`` the close reason.
    """

    def __init__(self, code: int = 1000, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"WebSocket closed with code {self.code}" + (
            f": {self.reason}" if self.reason else ""
        )


def _on_loop_thread() -> bool:
    return asyncio._get_running_loop() is not None


class WebSocket:
    """One WebSocket connection, as its handler sees it through :data:`websocket`.

    The I/O methods (``accept``, ``receive``, ``receive_json``, ``send``, ``send_json``,
    ``close``) follow the code that calls them. On the event loop's thread (an
    ``async def`` handler and the coroutines it runs) they return a coroutine to
    ``await``; in a sync handler's worker thread they block and return the result.
    Sync code on the loop thread (a sync hook of an async route) uses
    ``flask_asgi.await_(websocket.receive())``.
    """

    def __init__(
        self,
        app: Flask,
        scope: dict[str, Any],
        environ: dict[str, Any],
        receive: Receive,
        send: Send,
        *,
        max_message: int = 0,
        idle_timeout: float = 0,
    ) -> None:
        self.app = app
        self.scope = scope
        self.environ = environ
        self._receive = receive
        self._send = send
        self.max_message = max_message
        self.idle_timeout = idle_timeout
        #: ``"connecting"`` (handshake), ``"open"`` (accepted) or ``"closed"``.
        self.state: Literal["connecting", "open", "closed"] = "connecting"
        self.close_code: int | None = None
        self.close_reason = ""
        self.accepted_subprotocol: str | None = None
        #: The HTTP status the handshake was refused with (``403`` for a close before accept).
        self.rejected_status: int | None = None
        self._inbox: asyncio.Queue[Any] = asyncio.Queue()
        self._room = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self._idle_handle: asyncio.TimerHandle | None = None
        self._last_activity = 0.0
        #: The task that awaits an async handler (None for a sync handler: not cancellable).
        self._handler_task: asyncio.Task[Any] | None = None
        self._handler_running = False
        self._handler_waiting = 0  # the handler task is inside receive()/send()
        self._interrupted = False  # we cancelled the handler task because the socket closed
        self._stop_token: int | None = None

    # -- the handshake request ------------------------------------------------------------

    @property
    def request(self) -> Any:
        """The handshake request (``flask.request`` during the connection)."""
        from flask import request

        return request._get_current_object()  # type: ignore[attr-defined]

    @property
    def headers(self) -> Headers:
        """The handshake's headers."""
        return self.request.headers  # type: ignore[no-any-return]

    @property
    def args(self) -> MultiDict[str, str]:
        """The handshake's query arguments."""
        return self.request.args  # type: ignore[no-any-return]

    @property
    def cookies(self) -> ImmutableMultiDict[str, str]:
        """The handshake's cookies."""
        return self.request.cookies  # type: ignore[no-any-return]

    @property
    def path(self) -> str:
        """The path, as ``request.path`` (without the ``root_path``)."""
        return self.request.path  # type: ignore[no-any-return]

    @property
    def url(self) -> str:
        """The full ``ws://`` (or ``wss://``) URL of the connection."""
        url: str = self.request.url
        return "ws" + url[4:] if url.startswith("http") else url

    @property
    def subprotocols(self) -> list[str]:
        """The subprotocols the client offered, in its order of preference."""
        return list(self.scope.get("subprotocols") or ())

    @property
    def client(self) -> tuple[str, int] | None:
        """The client's ``(host, port)``, if the server knows it."""
        client = self.scope.get("client")
        return (client[0], client[1]) if client else None

    @property
    def http_response_supported(self) -> bool:
        """Can a refused handshake get an HTTP response (the server has the ASGI
        ``websocket.http.response`` extension)? Otherwise it is closed: HTTP 403."""
        return HTTP_RESPONSE_EXTENSION in (self.scope.get("extensions") or {})

    # -- the API: coroutines on the loop thread, blocking calls elsewhere ----------------

    def _run(self, coro: Coroutine[Any, Any, T]) -> Any:
        if _on_loop_thread():
            return coro
        return await_(coro)

    def accept(
        self,
        subprotocol: str | None = None,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    ) -> Any:
        """Accept the handshake, optionally choosing one of the client's ``subprotocols``
        and adding response headers. Sending or receiving first accepts implicitly.
        Accepting an open connection does nothing."""
        return self._run(self.accept_async(subprotocol, headers))

    def receive(self, timeout: float | None = None) -> Any:
        """The next message: ``str`` for a text message, ``bytes`` for a binary one.
        Raises :class:`WebSocketDisconnect` once the connection is closed, and
        ``TimeoutError`` if no message came within ``timeout`` seconds."""
        return self._run(self.receive_async(timeout))

    def receive_json(self, timeout: float | None = None) -> Any:
        """The next message, decoded with the app's JSON provider (``app.json``)."""
        return self._run(self.receive_json_async(timeout))

    def send(self, data: Message) -> Any:
        """Send ``data``: a ``str`` as a text message, ``bytes`` as a binary one."""
        return self._run(self.send_async(data))

    def send_json(self, obj: Any) -> Any:
        """Send ``obj`` as a text message encoded with the app's JSON provider."""
        return self._run(self.send_json_async(obj))

    def close(self, code: int = 1000, reason: str = "") -> Any:
        """Close the connection. Before ``accept`` this refuses the handshake (HTTP 403).
        Closing a closed connection does nothing."""
        return self._run(self.close_async(code, reason))

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        """``async for message in websocket``: ends when the connection closes."""
        try:
            return await self.receive_async()
        except WebSocketDisconnect:
            raise StopAsyncIteration from None

    def __iter__(self) -> Iterator[Message]:
        return self

    def __next__(self) -> Message:
        """``for message in websocket`` (sync handlers): ends when the connection closes."""
        try:
            message: Message = await_(self.receive_async())
        except WebSocketDisconnect:
            raise StopIteration from None
        return message

    # -- the same operations, always coroutines (precisely typed) --------------------------

    async def accept_async(
        self,
        subprotocol: str | None = None,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    ) -> None:
        if self.state == "open":
            return
        if self.state == "closed":
            raise self._disconnect()
        message: dict[str, Any] = {"type": "websocket.accept", "subprotocol": subprotocol}
        if headers:
            items = headers.items() if isinstance(headers, Mapping) else headers
            message["headers"] = [
                (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in items
            ]
        self.state = "open"
        self.accepted_subprotocol = subprotocol
        await self._send(message)
        loop = asyncio.get_running_loop()
        self._last_activity = loop.time()
        self._reader = loop.create_task(self._read(), name="flask-asgi-websocket-reader")
        if self.idle_timeout > 0:
            self._idle_handle = loop.call_later(self.idle_timeout, self._check_idle)
        lifecycle = lifecycle_of(self.app)
        if lifecycle is not None and lifecycle.in_lifespan:  # served: on shutdown, 1001
            stop = lifecycle.stop_signal.subscribe(lambda: self._close_soon(1001, "going away"))
            self._stop_token = stop

    async def receive_async(self, timeout: float | None = None) -> Message:
        if self.state == "connecting":
            await self.accept_async()
        # In this task (asyncio.timeout, not wait_for): a close then reaches the handler
        # as WebSocketDisconnect rather than as a cancellation.
        waiting = self._handler_task is not None and asyncio.current_task() is self._handler_task
        if waiting:
            self._handler_waiting += 1
        try:
            async with asyncio.timeout(timeout):
                item = await self._inbox.get()
        finally:
            if waiting:
                self._handler_waiting -= 1
        self._room.set()
        if item is _END:
            self._inbox.put_nowait(_END)  # every later receive() sees the end too
            raise self._disconnect()
        message: Message = item
        return message

    async def receive_json_async(self, timeout: float | None = None) -> Any:
        return self.app.json.loads(await self.receive_async(timeout))

    async def send_json_async(self, obj: Any) -> None:
        await self.send_async(self.app.json.dumps(obj))

    async def send_async(self, data: Message) -> None:
        message: dict[str, Any]
        if isinstance(data, str):
            message = {"type": "websocket.send", "text": data}
        elif isinstance(data, bytes | bytearray | memoryview):
            message = {"type": "websocket.send", "bytes": bytes(data)}
        else:
            raise TypeError(f"websocket.send() takes str or bytes, not {type(data).__name__}")
        if self.state == "connecting":
            await self.accept_async()
        if self.state == "closed":
            raise self._disconnect()
        waiting = self._handler_task is not None and asyncio.current_task() is self._handler_task
        if waiting:
            self._handler_waiting += 1
        try:
            await self._send(message)
        except OSError:  # the server's "client disconnected" (uvicorn's ClientDisconnected)
            self._closed(1006, "")
            raise self._disconnect() from None
        finally:
            if waiting:
                self._handler_waiting -= 1
        self._last_activity = asyncio.get_running_loop().time()

    async def close_async(self, code: int = 1000, reason: str = "") -> None:
        if self.state == "closed":
            return
        if self.state == "connecting":
            # ASGI: websocket.close before websocket.accept refuses the handshake (HTTP 403).
            self.state = "closed"
            self.close_code, self.close_reason = code, reason
            self.rejected_status = 403
            await self._send({"type": "websocket.close", "code": code, "reason": reason})
            return
        self._closed(code, reason, interrupt=False)
        while not self._inbox.empty():  # the handler is done reading: drop what is unread
            self._inbox.get_nowait()
        self._inbox.put_nowait(_END)
        await self._send_close(code, reason)

    # -- connection machinery -------------------------------------------------------------

    def _disconnect(self) -> WebSocketDisconnect:
        return WebSocketDisconnect(
            self.close_code if self.close_code is not None else 1006, self.close_reason
        )

    def _closed(self, code: int, reason: str, interrupt: bool = True) -> None:
        """The connection is closed (runs on the loop). Wake the handler: a receive()
        raises ``WebSocketDisconnect``; an async handler waiting on anything else is
        cancelled, as an async HTTP view is when its client leaves."""
        if self.state == "closed":
            return
        self.state = "closed"
        self.close_code, self.close_reason = code, reason
        self._inbox.put_nowait(_END)
        if self._idle_handle is not None:
            self._idle_handle.cancel()
        task = self._handler_task
        if (
            interrupt
            and task is not None
            and self._handler_running
            and self._handler_waiting == 0
            and not task.done()
        ):
            self._interrupted = True
            task.cancel()

    def _close_soon(self, code: int, reason: str) -> None:
        """The server closes the connection (idle timeout, oversized message)."""
        if self.state != "open":
            return
        self._closed(code, reason)
        self._closer = asyncio.get_running_loop().create_task(self._send_close(code, reason))

    async def _send_close(self, code: int, reason: str) -> None:
        try:
            await self._send({"type": "websocket.close", "code": code, "reason": reason})
        except OSError:
            pass  # the client is gone already

    async def _read(self) -> None:
        """Read client messages ahead of the handler, so that a disconnect, an oversized
        message or an idle timeout is noticed whatever the handler is doing."""
        try:
            while True:
                while self._inbox.qsize() >= _INBOX_LIMIT:
                    self._room.clear()
                    await self._room.wait()
                message = await self._receive()
                kind = message["type"]
                if kind == "websocket.receive":
                    if self.state == "closed":
                        continue  # the handler closed the connection: nobody reads any more
                    text = message.get("text")
                    data: Message = text if text is not None else (message.get("bytes") or b"")
                    if self._too_big(data):
                        self._close_soon(1009, "message too big")
                        return
                    self._last_activity = asyncio.get_running_loop().time()
                    self._inbox.put_nowait(data)
                elif kind == "websocket.disconnect":
                    self._closed(int(message.get("code", 1005)), message.get("reason") or "")
                    return
        except Exception:
            self._closed(1006, "")  # the server's receive() failed: treat as a dropped link

    def _too_big(self, data: Message) -> bool:
        limit = self.max_message
        if limit <= 0 or len(data) * (4 if isinstance(data, str) else 1) <= limit:
            return False
        if isinstance(data, str):
            return len(data) > limit or len(data.encode("utf-8")) > limit
        return len(data) > limit

    def _check_idle(self) -> None:
        if self.state != "open":
            return
        loop = asyncio.get_running_loop()
        remaining = self._last_activity + self.idle_timeout - loop.time()
        if remaining > 0:
            self._idle_handle = loop.call_later(remaining, self._check_idle)
        else:
            self._close_soon(1001, "idle timeout")

    async def _finish(self) -> None:
        """After the handler and teardown: stop the reader and the idle timer, make sure
        an accepted connection is closed."""
        if self._idle_handle is not None:
            self._idle_handle.cancel()
        lifecycle = lifecycle_of(self.app)
        if self._stop_token is not None and lifecycle is not None:
            lifecycle.stop_signal.unsubscribe(self._stop_token)
        if self.state == "open":  # only when the pipeline was interrupted (BaseException)
            self._closed(1011, "", interrupt=False)
            await self._send_close(1011, "")
        if self._closer is not None and not self._closer.done():
            await asyncio.wait({self._closer}, timeout=5)
        if self._reader is not None:
            self._reader.cancel()

    def __repr__(self) -> str:
        return f"<WebSocket {self.scope.get('path')!r} {self.state}>"


_current: contextvars.ContextVar[WebSocket] = contextvars.ContextVar("flask_asgi.websocket")


def _current_connection() -> WebSocket:
    try:
        return _current.get()
    except LookupError:
        if reached_without_connection():  # a WebSocket handler under a WSGI server: 426
            raise WebSocketNeedsASGI() from None
        raise RuntimeError("Working outside of a WebSocket connection.") from None


#: The current WebSocket connection, like ``flask.request`` for HTTP.
websocket: WebSocket = LocalProxy(_current_connection)  # type: ignore[assignment]
