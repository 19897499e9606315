"""Answering a request without running the app: 408 for a body that never came, 503 for
overload, 400 for a request framed two ways or naming two hosts. The answer is Werkzeug's
own error page, as Flask would send it."""

from __future__ import annotations

from typing import Any

from werkzeug.exceptions import BadRequest, HTTPException

from ..ground.asgi_types import Send


async def refuse(
    send: Send, error: HTTPException, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Send ``error``'s response (plus ``headers``) as the whole answer to the request."""
    body = error.get_body().encode("utf-8")
    response_headers = [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-length", str(len(body)).encode("latin-1")),
        *(headers or []),
    ]
    await send({"type": "http.response.start", "status": error.code, "headers": response_headers})
    await send({"type": "http.response.body", "body": body})


async def refuse_malformed(send: Send, environ: dict[str, Any]) -> None:
    """400 and ``Connection: close`` for a request ``build_environ`` marked malformed: the
    server must not read what follows as a next request (it may be a smuggled one)."""
    await refuse(send, BadRequest(environ["flask_asgi.malformed"]), [(b"connection", b"close")])
