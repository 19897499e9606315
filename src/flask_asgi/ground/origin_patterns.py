"""Origins and origin patterns: parsed once, compared as (scheme, host, port).

Ground floor, because two floors need them: the settings check
``FLASK_ASGI_WEBSOCKET_ALLOWED_ORIGINS`` at startup, and the WebSocket handshake
(``protocol/websocket/origin.py``) compares a handshake's ``Origin`` with them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

CONFIG_KEY = "FLASK_ASGI_WEBSOCKET_ALLOWED_ORIGINS"


def split_list(value: str) -> list[str]:
    """A comma-separated setting (an environment variable) as a list."""
    return [item.strip() for item in value.split(",") if item.strip()]


_DEFAULT_PORTS = {"http": 80, "https": 443}
_SAME_SCHEME = {"ws": "http", "wss": "https"}

#: An origin as compared: scheme, lowercase host, port.
Origin = tuple[str, str, int | None]


def _scheme(value: str) -> str:
    value = value.lower()
    return _SAME_SCHEME.get(value, value)


def parse_origin(value: str) -> Origin | None:
    """``"https://App.example.com"`` -> ``("https", "app.example.com", 443)``; None for
    anything that is not a plain ``scheme://host[:port]`` (``null``, a path, a list)."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname or parts.path not in ("", "/"):
        return None
    if parts.query or parts.fragment or parts.username is not None or "," in value:
        return None
    scheme = _scheme(parts.scheme)
    return scheme, parts.hostname, port if port is not None else _DEFAULT_PORTS.get(scheme)


_PATTERN = re.compile(
    r"(?:(?P<scheme>[a-z][a-z0-9+.-]*)://)?"
    r"(?P<host>\[[0-9a-f:.]+\]|(?P<wildcard>\*\.)?[^\s/?#@,:\[\]*]+)"
    r"(?::(?P<port>[0-9]+|\*))?/?",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class OriginPattern:
    """One allowed origin: ``https://app.example.com``, ``https://*.example.com``
    (subdomains at any depth, not ``example.com`` itself), ``*.example.com`` or
    ``app.example.com`` (any scheme), ``http://localhost:*`` (any port), or ``*`` (any
    ``Origin`` at all). Without a port, the scheme's default port."""

    scheme: str | None  # None: any scheme
    host: str | None  # None: any origin ("*"); "*.example.com" is kept as ".example.com"
    port: int | None  # None: the origin's default port
    any_port: bool = False

    @classmethod
    def parse(cls, pattern: str, where: str = CONFIG_KEY) -> OriginPattern:
        text = pattern.strip()
        if text == "*":
            return cls(None, None, None, any_port=True)
        match = _PATTERN.fullmatch(text)
        if match is None:
            raise ValueError(
                f"{where}: {pattern!r} is not an origin or an origin pattern (expected"
                " 'https://app.example.com', 'https://*.example.com', '*.example.com' or '*')"
            )
        scheme, host, port = match.group("scheme", "host", "port")
        try:  # browsers send an international name in its ASCII (punycode) form
            host = host.lower().strip("[]").encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(f"{where}: {pattern!r} has an invalid host name") from None
        return cls(
            _scheme(scheme) if scheme else None,
            host[1:] if match.group("wildcard") else host,
            int(port) if port and port != "*" else None,
            any_port=port == "*",
        )

    def matches(self, origin: Origin) -> bool:
        scheme, host, port = origin
        if self.host is None:
            return True
        if self.scheme is not None and self.scheme != scheme:
            return False
        if self.host.startswith("."):
            if not host.endswith(self.host) or len(host) == len(self.host):
                return False
        elif host != self.host:
            return False
        if self.any_port:
            return True
        return port == (self.port if self.port is not None else _DEFAULT_PORTS.get(scheme))


@functools.lru_cache(maxsize=64)
def _compile(patterns: tuple[str, ...], where: str) -> tuple[OriginPattern, ...]:
    return tuple(OriginPattern.parse(pattern, where) for pattern in patterns)


def compile_patterns(value: Any, where: str = CONFIG_KEY) -> tuple[OriginPattern, ...]:
    """The allowed origins from a setting: a list of patterns, or a comma-separated string.
    Raises ``ValueError`` (naming ``where``) for anything else."""
    if isinstance(value, str):
        items: Iterable[Any] = split_list(value)
    elif isinstance(value, list | tuple | set | frozenset):
        items = value
    elif value is None:
        items = ()
    else:
        raise ValueError(f"{where} must be a list of origins, not {type(value).__name__}")
    patterns = tuple(items)
    if not all(isinstance(pattern, str) for pattern in patterns):
        raise ValueError(f"{where} must be a list of origin strings, got {patterns!r}")
    return _compile(patterns, where)
