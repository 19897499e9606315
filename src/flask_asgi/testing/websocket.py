"""WebSocket connections for the test clients: ``client.websocket("/ws")``.

The handshake is built by Werkzeug's ``EnvironBuilder`` with the client's cookies, turned
into an ASGI ``websocket`` scope and sent to the ``ASGI`` object as a server would send
it. The connection runs on the serving loop (:mod:`.serving_loop`), whichever client opened
it: the sync session's calls wait for it, the async session's are awaited from the test's
own loop.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from typing import TYPE_CHECKING, Any

from flask.testing import EnvironBuilder
from werkzeug.datastructures import Headers
from werkzeug.test import TestResponse
from werkzeug.wrappers import Request

from ..protocol.websocket import HTTP_RESPONSE_EXTENSION, Message, WebSocketDisconnect
from .exchange import ServedApp, _call, scope_from_environ
from .serving_loop import _Interrupted, on_serving_loop

if TYPE_CHECKING:
    from flask.testing import FlaskClient

#: How long the client waits for the app (to accept, to answer, to finish) by default.
DEFAULT_TIMEOUT = 10.0


class WebSocketRejected(Exception):
    """The app refused the handshake. ``response`` is the HTTP response (a Flask
    ``TestResponse``; status ``403`` with an empty body when the app closed the socket
    before accepting), ``status_code`` its status."""

    def __init__(self, response: TestResponse) -> None:
        super().__init__(f"WebSocket handshake rejected: {response.status}")
        self.response = response
        self.status_code = response.status_code


def _handshake(
    client: FlaskClient,
    path: str,
    subprotocols: list[str] | None,
    http_response: bool,
    origin: str | bool,
    kwargs: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The environ (as Flask's client builds it, with its cookies) and the ASGI scope."""
    headers = Headers(kwargs.pop("headers", None))
    if isinstance(origin, str):
        headers["Origin"] = origin
    elif not origin:
        headers.remove("Origin")
    headers.setdefault("Connection", "Upgrade")
    headers.setdefault("Upgrade", "websocket")
    headers.setdefault("Sec-WebSocket-Version", "13")
    headers.setdefault("Sec-WebSocket-Key", base64.b64encode(os.urandom(16)).decode())
    if subprotocols:
        headers["Sec-WebSocket-Protocol"] = ", ".join(subprotocols)
    kwargs["environ_base"] = client._copy_environ(kwargs.get("environ_base") or {})
    kwargs.pop("method", None)
    builder = EnvironBuilder(client.application, path, headers=headers, **kwargs)
    try:
        environ = builder.get_environ()
    finally:
        builder.close()
    client._add_cookies_to_wsgi(environ)
    if origin is True and "HTTP_ORIGIN" not in environ:
        # What a browser sends for a page of the same site: the handshake URL's origin.
        environ["HTTP_ORIGIN"] = f"{environ['wsgi.url_scheme']}://{environ['HTTP_HOST']}"
    scope = scope_from_environ(environ)
    scope["type"] = "websocket"
    scope["scheme"] = "wss" if scope["scheme"] == "https" else "ws"
    del scope["method"]
    scope["subprotocols"] = list(subprotocols or ())
    if http_response:
        scope["extensions"][HTTP_RESPONSE_EXTENSION] = {}
    return environ, scope


class AsyncWebSocketSession:
    """A test WebSocket connection: ``async with client.websocket("/ws") as ws:``.

    ``send``/``send_json`` send client messages; ``receive``/``receive_json`` return the
    app's next message, or raise :class:`~flask_asgi.WebSocketDisconnect` once the app
    closed the connection. ``close()`` closes from the client side. After the connection
    ends, ``close_code``/``close_reason`` say how. Leaving the block closes the connection
    (code 1000) if it is open, waits for the app to finish and re-raises an exception the
    app raised (as Flask's test client does for requests).

    The handshake carries the ``Origin`` a browser sends for a page of the same site
    (the URL's scheme and host); ``origin="https://other.example"`` (or an ``Origin`` in
    ``headers``) sends another one, ``origin=False`` none. A refused handshake raises
    :class:`WebSocketRejected` on entry.
    """

    def __init__(
        self,
        asgi: ServedApp,
        client: FlaskClient,
        path: str = "/",
        *,
        subprotocols: list[str] | None = None,
        http_response: bool = True,
        origin: str | bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        self.asgi = asgi
        self.client = client
        self.timeout = timeout
        self.environ, self.scope = _handshake(
            client, path, subprotocols, http_response, origin, kwargs
        )
        #: The subprotocol and the headers the app accepted with.
        self.accepted_subprotocol: str | None = None
        self.accept_headers = Headers()
        self.close_code: int | None = None
        self.close_reason = ""
        self._to_app: asyncio.Queue[dict[str, Any]] | None = None
        self._from_app: asyncio.Queue[dict[str, Any] | None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._connected = False  # websocket.connect was taken by the app
        self._client_closed = False
        self._error: BaseException | None = None

    # -- the ASGI side ----------------------------------------------------------------------

    async def _app_receive(self) -> dict[str, Any]:
        assert self._to_app is not None
        if not self._connected:
            self._connected = True
            return {"type": "websocket.connect"}
        return await self._to_app.get()

    async def _app_send(self, message: dict[str, Any]) -> None:
        assert self._from_app is not None and self._to_app is not None
        kind = message["type"]
        if self.close_code is not None or self._client_closed:
            if kind == "websocket.close" and self.close_code is None:
                self.close_code = int(message.get("code", 1000))
                self.close_reason = message.get("reason") or ""
                return
            raise OSError("the WebSocket test client has closed the connection")
        if kind == "websocket.close":
            # As a server does: the close is answered, and the app then receives it.
            self.close_code = int(message.get("code", 1000))
            self.close_reason = message.get("reason") or ""
            self._to_app.put_nowait(
                {"type": "websocket.disconnect", "code": self.close_code, "reason": ""}
            )
        await self._from_app.put(message)

    async def _run_app(self) -> None:
        try:
            await self.asgi(self.scope, self._app_receive, self._app_send)
        except (KeyboardInterrupt, SystemExit) as exc:  # would stop the loop
            self._error = exc
        except Exception as exc:
            self._error = exc

    def _raise_app_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            if not isinstance(error, Exception):
                raise _Interrupted(error)  # the sync client's _call() re-raises it
            raise error

    async def _next(self, timeout: float | None) -> dict[str, Any] | None:
        assert self._from_app is not None
        return await asyncio.wait_for(self._from_app.get(), timeout)

    # -- the client API ---------------------------------------------------------------------

    async def connect(self) -> None:
        """Send the handshake; return once accepted (the ``async with`` entry)."""
        await on_serving_loop(self._connect())

    async def _connect(self) -> None:
        self._to_app, self._from_app = asyncio.Queue(), asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run_app())
        self._task.add_done_callback(lambda _: self._from_app.put_nowait(None))  # type: ignore[union-attr]
        message = await self._next(self.timeout)
        if message is None:
            await self._wait_app()
            self._raise_app_error()
            raise RuntimeError("the app ended the WebSocket handshake without an answer")
        kind = message["type"]
        if kind == "websocket.accept":
            self.accepted_subprotocol = message.get("subprotocol")
            for name, value in message.get("headers") or ():
                self.accept_headers.add(name.decode("latin-1"), value.decode("latin-1"))
            return
        if kind == "websocket.close":
            response = self._response(403, [], [b""])
        elif kind == "websocket.http.response.start":
            body = []
            more = True
            while more:
                part = await self._next(self.timeout)
                if part is None:
                    break
                body.append(bytes(part.get("body", b"")))
                more = bool(part.get("more_body", False))
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message["headers"]]
            response = self._response(message["status"], headers, body)
        else:
            raise RuntimeError(f"unexpected ASGI message during the handshake: {kind!r}")
        await self._wait_app()
        self._raise_app_error()
        raise WebSocketRejected(response)

    def _response(self, status: int, headers: list[tuple[str, str]], body: list[bytes]) -> Any:
        from http import HTTPStatus

        try:
            phrase = HTTPStatus(status).phrase.upper()
        except ValueError:
            phrase = "UNKNOWN"
        response = self.client.response_wrapper(
            body, f"{status} {phrase}", Headers(headers), request=Request(self.environ)
        )
        host = self.environ.get("HTTP_HOST") or self.environ.get("SERVER_NAME") or "localhost"
        self.client._update_cookies_from_response(
            host.partition(":")[0],
            self.environ.get("PATH_INFO") or "/",
            response.headers.getlist("Set-Cookie"),
        )
        return response

    async def send(self, data: Message) -> None:
        """Send a text (``str``) or binary (``bytes``) message to the app."""
        await on_serving_loop(self._send(data))

    async def _send(self, data: Message) -> None:
        assert self._to_app is not None
        if self._client_closed or self.close_code is not None:
            raise WebSocketDisconnect(self.close_code or 1000, self.close_reason)
        if isinstance(data, str):
            await self._to_app.put({"type": "websocket.receive", "text": data})
        elif isinstance(data, bytes | bytearray | memoryview):
            await self._to_app.put({"type": "websocket.receive", "bytes": bytes(data)})
        else:
            raise TypeError(f"send() takes str or bytes, not {type(data).__name__}")

    async def send_json(self, obj: Any) -> None:
        await self.send(json.dumps(obj))

    async def receive(self, timeout: float | None = DEFAULT_TIMEOUT) -> Message:
        """The app's next message (``str`` or ``bytes``). Raises ``WebSocketDisconnect``
        once the app has closed the connection, and ``TimeoutError`` after ``timeout``."""
        return await on_serving_loop(self._receive(timeout))

    async def _receive(self, timeout: float | None) -> Message:
        message = await self._next(timeout)
        if message is None:
            assert self._from_app is not None
            self._from_app.put_nowait(None)  # later calls see the end too
            self._raise_app_error()
            if self.close_code is None:
                self.close_code = 1006  # the app returned without closing
            raise WebSocketDisconnect(self.close_code, self.close_reason)
        kind = message["type"]
        if kind == "websocket.send":
            text = message.get("text")
            return text if text is not None else bytes(message.get("bytes") or b"")
        if kind == "websocket.close":
            raise WebSocketDisconnect(int(message.get("code", 1000)), message.get("reason") or "")
        raise RuntimeError(f"unexpected ASGI message: {kind!r}")

    async def receive_json(self, timeout: float | None = DEFAULT_TIMEOUT) -> Any:
        return json.loads(await self.receive(timeout))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close from the client side (the app receives ``websocket.disconnect``), wait for
        the app to finish, and re-raise an exception it raised."""
        await on_serving_loop(self._close(code, reason))

    async def _close(self, code: int = 1000, reason: str = "") -> None:
        if not self._client_closed:
            self._client_closed = True
            if self.close_code is None:
                self.close_code, self.close_reason = code, reason
                assert self._to_app is not None
                await self._to_app.put(
                    {"type": "websocket.disconnect", "code": code, "reason": reason}
                )
        await self._wait_app()
        self._raise_app_error()

    async def _wait_app(self) -> None:
        """Wait for the app to finish. One still running ``timeout`` seconds after the
        connection closed would hold its resources on a server too: it is cancelled, and
        ``TimeoutError`` says so."""
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=self.timeout)
            if not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=self.timeout)
                raise TimeoutError(
                    f"the WebSocket handler for {self.scope['path']!r} was still running"
                    f" {self.timeout} s after the connection closed"
                )

    async def __aenter__(self) -> AsyncWebSocketSession:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        await on_serving_loop(self._leave(exc_type))

    async def _leave(self, exc_type: Any) -> None:
        if exc_type is None:
            await self._close()
        else:
            try:
                await self._close()
            except Exception:
                pass  # the test's own exception is the one to see


class WebSocketSession:
    """The sync form of :class:`AsyncWebSocketSession`, for ``app.test_client()``:
    ``with client.websocket("/ws") as ws: ws.send("hi"); assert ws.receive() == "hi"``.
    Each call waits for the serving loop, where the app runs."""

    def __init__(
        self, asgi: ServedApp, client: FlaskClient, path: str = "/", **kwargs: Any
    ) -> None:
        self._session = AsyncWebSocketSession(asgi, client, path, **kwargs)

    @property
    def close_code(self) -> int | None:
        return self._session.close_code

    @property
    def close_reason(self) -> str:
        return self._session.close_reason

    @property
    def accepted_subprotocol(self) -> str | None:
        return self._session.accepted_subprotocol

    @property
    def accept_headers(self) -> Headers:
        return self._session.accept_headers

    def send(self, data: Message) -> None:
        _call(self._session._send(data))

    def send_json(self, obj: Any) -> None:
        _call(self._session._send(json.dumps(obj)))

    def receive(self, timeout: float | None = DEFAULT_TIMEOUT) -> Message:
        return _call(self._session._receive(timeout))

    def receive_json(self, timeout: float | None = DEFAULT_TIMEOUT) -> Any:
        return json.loads(_call(self._session._receive(timeout)))

    def close(self, code: int = 1000, reason: str = "") -> None:
        _call(self._session._close(code, reason))

    def __enter__(self) -> WebSocketSession:
        _call(self._session._connect())
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        _call(self._session._leave(exc_type))
