"""Translate an ASGI HTTP scope into the WSGI environ that Flask (and WSGI middleware) read."""

from __future__ import annotations

import sys
from typing import Any

from .body import Receive, RequestBody

#: Scope extension through which the test client passes WSGI-only environ keys
#: (``werkzeug.debug.preserve_context`` and the like) that have no ASGI equivalent.
ENVIRON_EXTENSION = "flask_asgi.environ"

_SPECIAL_HEADERS = {b"content-type": "CONTENT_TYPE", b"content-length": "CONTENT_LENGTH"}
_header_keys: dict[bytes, str] = {}


def _environ_key(name: bytes) -> str:
    """``b"x-forwarded-for"`` -> ``"HTTP_X_FORWARDED_FOR"`` (memoised: the set is small)."""
    key = _header_keys.get(name)
    if key is None:
        key = _SPECIAL_HEADERS.get(name) or "HTTP_" + name.decode("latin-1").upper().replace(
            "-", "_"
        )
        if len(_header_keys) < 1024:
            _header_keys[name] = key
    return key


def build_environ(scope: dict[str, Any], receive: Receive) -> dict[str, Any]:
    """Build the environ for ``scope``; its ``wsgi.input`` reads the body from ``receive``."""
    root_path: str = scope.get("root_path", "")
    path: str = scope["path"]
    if root_path and path.startswith(root_path):
        path = path[len(root_path) :]
    server = scope.get("server") or ("localhost", 80)
    client = scope.get("client")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": root_path.encode("utf-8", "surrogateescape").decode("latin-1"),
        "PATH_INFO": path.encode("utf-8", "surrogateescape").decode("latin-1"),
        "QUERY_STRING": scope["query_string"].decode("latin-1"),
        "SERVER_NAME": server[0],
        "SERVER_PORT": str(server[1]) if server[1] is not None else "80",
        "SERVER_PROTOCOL": "HTTP/" + scope.get("http_version", "1.1"),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        # Our stream ends where the body ends, so Werkzeug may read it to EOF.
        "wsgi.input_terminated": True,
        "asgi.scope": scope,
    }
    if client:
        environ["REMOTE_ADDR"] = client[0]
        environ["REMOTE_PORT"] = str(client[1])
    chunked = False
    for name, value in scope["headers"]:
        key = _environ_key(name)
        text = value.decode("latin-1")
        if key in environ:
            # Repeated headers are folded as a WSGI server does (cookies use their own separator).
            text = environ[key] + ("; " if key == "HTTP_COOKIE" else ",") + text
        elif key == "HTTP_TRANSFER_ENCODING":
            chunked = "chunked" in text.lower()
        environ[key] = text
    content_length = None
    if "CONTENT_LENGTH" in environ:
        try:
            content_length = max(int(environ["CONTENT_LENGTH"]), 0)
        except ValueError:
            content_length = None
    has_body = chunked or bool(content_length)
    environ["wsgi.input"] = RequestBody(receive, content_length, complete=not has_body)
    extensions = scope.get("extensions")
    if extensions and ENVIRON_EXTENSION in extensions:
        environ.update(extensions[ENVIRON_EXTENSION])
    return environ
