"""Same-origin WebSocket handshakes: no cross-site WebSocket hijacking.

Browsers send cookies with a WebSocket handshake to any site, and the same-origin policy
does not apply to WebSockets, so a page on another site could open a socket with the
visitor's session. A handshake whose ``Origin`` header is neither the app's own origin
(``request.host_url`` as Werkzeug computes it from the environ, after the WSGI
middleware) nor an allowed one is refused before any hook or handler runs. A handshake
without ``Origin`` comes from a non-browser client, which carries no visitor's cookies:
it is allowed.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask
from werkzeug.exceptions import SecurityError

from ...ground.origin_patterns import CONFIG_KEY, compile_patterns, parse_origin

logger = logging.getLogger("flask_asgi")

#: Where a route's own list is kept: an attribute of its view function.
ROUTE_ATTRIBUTE = "flask_asgi_allowed_origins"


def host_untrusted(app: Flask, environ: dict[str, Any]) -> bool:
    """Flask's ``TRUSTED_HOSTS``, checked before the origin (True: refuse, after logging).

    DNS rebinding points an attacker's name at this server: the browser then sends that name
    as both ``Host`` and ``Origin``, so the handshake looks same-origin. Flask would answer
    such a request 400 only after its ``before_request`` hooks; a handshake is refused
    before any hook runs.
    """
    trusted = app.config.get("TRUSTED_HOSTS")
    if not trusted:
        return False
    request = app.request_class(environ)
    request.trusted_hosts = trusted
    try:
        request.host  # noqa: B018 - Werkzeug checks the host against trusted_hosts here
    except SecurityError:
        logger.warning(
            "Refused a WebSocket handshake to %s: Host %r is not in TRUSTED_HOSTS",
            environ.get("PATH_INFO") or "/",
            environ.get("HTTP_HOST"),
        )
        return True
    return False


def own_origin(app: Flask, environ: dict[str, Any]) -> str:
    """The handshake's own origin, ``scheme://host[:port]``: ``request.host_url`` as
    Werkzeug computes it (the Host header, else SERVER_NAME/SERVER_PORT; default ports
    left out), from the environ after the WSGI middleware."""
    request = app.request_class(environ)
    request.trusted_hosts = None  # TRUSTED_HOSTS is Flask's own check, made later
    return request.host_url.rstrip("/")


def origin_refused(app: Flask, environ: dict[str, Any], view: Any) -> bool:
    """Refuse the handshake? True (after logging why) when it has an ``Origin`` that is
    neither its own nor allowed by the route's ``allowed_origins`` or, for a route
    without one, by ``FLASK_ASGI_WEBSOCKET_ALLOWED_ORIGINS``."""
    header = environ.get("HTTP_ORIGIN")
    if header is None:
        return False  # not a browser: no visitor's cookies to abuse
    own = own_origin(app, environ)
    origin = parse_origin(header)
    if origin is not None and origin == parse_origin(own):
        return False
    route_patterns = getattr(view, ROUTE_ATTRIBUTE, None) if view is not None else None
    if route_patterns is not None:
        patterns, where = route_patterns, "the route's allowed_origins"
    else:
        patterns, where = compile_patterns(app.config.get(CONFIG_KEY)), CONFIG_KEY
    if origin is not None and any(pattern.matches(origin) for pattern in patterns):
        return False
    if any(pattern.host is None for pattern in patterns):
        return False  # "*" allows any Origin, even one that is not scheme://host
    logger.warning(
        "Refused a cross-origin WebSocket handshake to %s from Origin %r (the app's own"
        " origin is %r); to allow it, add that origin to %s",
        environ.get("PATH_INFO") or "/",
        header,
        own,
        where,
    )
    return True
