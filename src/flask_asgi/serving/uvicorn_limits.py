"""A limit on the size of a request's head for uvicorn's httptools protocol.

uvicorn's h11 protocol refuses a head larger than ``h11_max_incomplete_event_size``;
its httptools protocol (the one uvicorn picks when httptools is installed, as
``uvicorn[standard]`` does) has no limit at all: measured, 10 connections sending 50 MiB
of unfinished headers took the server from 42 to 554 MiB. :class:`HeadLimitedHttpTools`
counts the bytes received while a head is incomplete and, past the same
``h11_max_incomplete_event_size``, answers 431 and closes the connection, so both
protocols hold the one limit flask-asgi sets (``options.MAX_HEAD_BYTES``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

logger = logging.getLogger("uvicorn.error")

_MESSAGE = b"Request header fields too large"
_REFUSAL = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: " + str(len(_MESSAGE)).encode("ascii") + b"\r\n"
    b"connection: close\r\n\r\n" + _MESSAGE
)


def head_limited_protocol(http: Any) -> Any:
    """The protocol to give ``uvicorn.Config(http=...)`` for ``http`` (uvicorn's own
    value): :class:`HeadLimitedHttpTools` where uvicorn would use httptools, else ``http``
    unchanged (h11 has its own limit; a class of the caller's own is left alone)."""
    if http not in ("auto", "httptools"):
        return http
    try:
        import httptools  # noqa: F401
    except ImportError:
        return http  # "auto" is h11 then; "httptools" fails in uvicorn, as it would anyway
    return HeadLimitedHttpTools


def _base() -> type[asyncio.Protocol]:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    return HttpToolsProtocol


try:
    _HttpTools: Any = _base()
except ImportError:  # no httptools: head_limited_protocol never names the class
    _HttpTools = asyncio.Protocol


class HeadLimitedHttpTools(_HttpTools):  # type: ignore[misc]
    """uvicorn's httptools protocol, with ``h11_max_incomplete_event_size`` for heads."""

    #: Bytes received since the current head began; None while a body is being received.
    _head_bytes: int | None = 0

    def data_received(self, data: bytes) -> None:
        if self._head_bytes is not None:
            self._head_bytes += len(data)
            limit = self.config.h11_max_incomplete_event_size
            if limit is not None and self._head_bytes > limit:
                self._refuse_head(limit)
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_bytes = 0  # a next request's head may follow

    def _refuse_head(self, limit: int) -> None:
        self._head_bytes = None  # nothing more is read: the connection closes
        cycle = self.cycle
        if cycle is None or cycle.response_complete:  # else a response is being sent
            self.transport.write(_REFUSAL)
        logger.warning("Request head over %d bytes: 431, connection closed", limit)
        self.transport.close()
