"""Translate an ASGI HTTP scope into the WSGI environ that Flask (and WSGI middleware) read."""

from __future__ import annotations

import sys
from typing import Any

from ..ground.asgi_types import Receive
from .body import RequestBody

#: Scope extension through which the test client passes WSGI-only environ keys
#: (``werkzeug.debug.preserve_context`` and the like) that have no ASGI equivalent.
ENVIRON_EXTENSION = "flask_asgi.environ"

#: Set in the environ of a request that must be refused before the app runs (400 and the
#: connection closed): its value says why. See :func:`malformed`.
MALFORMED = "flask_asgi.malformed"
#: Headers that may appear once: two Hosts are two claims about the target (RFC 9112
#: §3.2), two Content-Lengths two claims about the framing, and folding either into "a,b"
#: lets a proxy and the app disagree about the request.
_SINGLE = frozenset({"HTTP_HOST", "CONTENT_LENGTH"})

_SPECIAL_HEADERS = {b"content-type": "CONTENT_TYPE", b"content-length": "CONTENT_LENGTH"}
_header_keys: dict[bytes, str] = {}


def _environ_key(name: bytes) -> str:
    """``b"x-forwarded-for"`` -> ``"HTTP_X_FORWARDED_FOR"`` (memoised: the set is small).

    A name with an underscore gives ``""``: the header is dropped, as gunicorn does, since
    ``X_Forwarded_For`` would otherwise pass for ``X-Forwarded-For`` in the environ.
    """
    key = _header_keys.get(name)
    if key is None:
        if b"_" in name:
            key = ""
        else:
            key = _SPECIAL_HEADERS.get(name) or "HTTP_" + name.decode("latin-1").upper().replace(
                "-", "_"
            )
        if len(_header_keys) < 1024:
            _header_keys[name] = key
    return key


#: The keys that are the same for every request (copied, then filled in).
_CONSTANT: dict[str, Any] = {
    "wsgi.version": (1, 0),
    "wsgi.errors": sys.stderr,
    "wsgi.multithread": True,
    "wsgi.multiprocess": True,
    "wsgi.run_once": False,
    # Our stream ends where the body ends, so Werkzeug may read it to EOF.
    "wsgi.input_terminated": True,
}


_HTTP_SCHEMES = {"ws": "http", "wss": "https"}


def _wsgi_str(text: str) -> str:
    """An ASGI (unicode) path as a WSGI string: its UTF-8 bytes read as latin-1."""
    return text if text.isascii() else text.encode("utf-8", "surrogateescape").decode("latin-1")


_PROTOCOLS = {"1.0": "HTTP/1.0", "1.1": "HTTP/1.1", "2": "HTTP/2", "3": "HTTP/3"}
_FRAMED_VERSIONS = frozenset({"2", "3"})
_BODILESS_METHODS = frozenset({"GET", "HEAD"})


def build_environ(scope: dict[str, Any], receive: Receive) -> dict[str, Any]:
    """Build the environ for ``scope``; its ``wsgi.input`` reads the body from ``receive``."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    script_name = ""
    if root_path:
        if path.startswith(root_path):
            path = path[len(root_path) :]
        script_name = _wsgi_str(root_path)
    server = scope.get("server") or ("localhost", 80)
    version = scope.get("http_version", "1.1")
    # An http scope's scheme is http or https: a ws/wss one (uvicorn takes X-Forwarded-Proto
    # from 127.0.0.1 as it comes) would make Werkzeug match WebSocket rules for plain HTTP.
    scheme = scope.get("scheme", "http")
    # One dict display, not a copy and a dozen stores (it is on every request's path).
    environ = {
        **_CONSTANT,
        "SCRIPT_NAME": script_name,
        "PATH_INFO": path if path.isascii() else _wsgi_str(path),
        "REQUEST_METHOD": scope["method"],
        "QUERY_STRING": scope["query_string"].decode("latin-1"),
        "SERVER_NAME": server[0],
        "SERVER_PORT": "80" if server[1] is None else str(server[1]),
        "SERVER_PROTOCOL": _PROTOCOLS.get(version) or "HTTP/" + version,
        "wsgi.url_scheme": _HTTP_SCHEMES.get(scheme, scheme),
        "asgi.scope": scope,
    }
    client = scope.get("client")
    if client:
        environ["REMOTE_ADDR"] = client[0]
        environ["REMOTE_PORT"] = str(client[1])
    chunked = False
    keys = _header_keys
    for name, value in scope["headers"]:
        key = keys.get(name) or _environ_key(name)
        if not key:
            continue
        text = value.decode("latin-1")
        if key in environ:
            if key in _SINGLE:
                environ[MALFORMED] = f"More than one {name.decode('latin-1')} header."
            # Repeated headers are folded as a WSGI server does (cookies use their own separator).
            text = environ[key] + ("; " if key == "HTTP_COOKIE" else ",") + text
        elif key == "HTTP_TRANSFER_ENCODING":
            chunked = "chunked" in text.lower()
        environ[key] = text
    content_length = None
    if chunked and "CONTENT_LENGTH" in environ:
        # RFC 9112 §6.3: a request framed both ways is a smuggling attempt, or a proxy bug.
        environ[MALFORMED] = "Both Transfer-Encoding and Content-Length."
    if "CONTENT_LENGTH" in environ:
        try:
            content_length = max(int(environ["CONTENT_LENGTH"]), 0)
        except ValueError:
            content_length = None
    # HTTP/2 and HTTP/3 frame the body in the stream: no Content-Length (and never a
    # Transfer-Encoding) does not mean no body there. GET and HEAD keep "no body", so they
    # keep their disconnect watcher (which waits for a complete body).
    framed = (
        content_length is None
        and scope.get("http_version") in _FRAMED_VERSIONS
        and scope["method"] not in _BODILESS_METHODS
    )
    has_body = chunked or bool(content_length) or framed
    environ["wsgi.input"] = RequestBody(receive, content_length, complete=not has_body)
    extensions = scope.get("extensions")
    if extensions and ENVIRON_EXTENSION in extensions:
        environ.update(extensions[ENVIRON_EXTENSION])
    return environ
