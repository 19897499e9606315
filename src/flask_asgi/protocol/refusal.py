"""Answering a request without running the app: 408 for a body that never came, 503 for
overload. The answer is Werkzeug's own error page, as Flask would send it."""

from __future__ import annotations

from werkzeug.exceptions import HTTPException

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
