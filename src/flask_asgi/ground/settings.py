"""Every ``FLASK_ASGI_*`` setting, declared once: its default, what it accepts, its doc line.

Where a value comes from, first match wins: ``app.config`` (set before ``ASGI(app)``), the
environment variable of the same name, the default. :func:`apply_settings` parses and
checks every key and writes the parsed value back into ``app.config``, so code that reads
the config per request (as Flask reads its own) always finds a value of the right type.
It runs at ``init_app``, again at lifespan startup (config set after ``ASGI(app)`` is
checked too) and when a test client is made. A bad value raises :class:`SettingError`,
naming the key, the value and what is allowed: the server does not start, and no request
ever sees the value. docs/configuration.md's table is tested against these declarations.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flask import Flask

from .gc_tuning import parse_gc_setting
from .origin_patterns import compile_patterns, split_list

logger = logging.getLogger("flask_asgi")

PREFIX = "FLASK_ASGI_"
#: Environment variables with the prefix that are not settings (set by flask-asgi itself).
INTERNAL_ENV = frozenset(
    {
        "FLASK_ASGI_CLI_APP",
        "FLASK_ASGI_CLI_ROOT_PATH",
        "FLASK_ASGI_CLI_WSGI_TARGET",
        "FLASK_ASGI_FLASK_SDIST",
        "FLASK_ASGI_BENCH_VENV",
    }
)

_DAY = 86_400.0
_HOUR = 3_600.0
_GIB = 1 << 30


class SettingError(ValueError):
    """A ``FLASK_ASGI_*`` value that flask-asgi cannot use: the message names the key."""

    def __init__(self, key: str, value: Any, allowed: str, source: str) -> None:
        super().__init__(f"{key}={value!r} (from {source}) is not valid: {allowed}")
        self.key = key


@dataclass(frozen=True)
class Setting:
    """One key: ``parse`` turns a raw value (``app.config``'s, or the environment's text)
    into the value in effect, or raises ``ValueError`` (its reason is added to
    ``allowed``)."""

    key: str
    default: Any
    parse: Callable[[Any], Any]
    allowed: str
    doc: str


def _number(value: Any, kind: type) -> Any:
    if isinstance(value, bool):  # True is an int to Python, never a count or seconds here
        raise ValueError("a boolean")
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError("empty")
        return kind(text)
    if kind is int and isinstance(value, float):
        if not value.is_integer():
            raise ValueError("not a whole number")
        return int(value)
    if not isinstance(value, int | float):
        raise ValueError(f"a {type(value).__name__}")
    return kind(value)


def seconds(low: float, high: float, *, zero: bool = True) -> Callable[[Any], float]:
    """A duration in seconds within ``[low, high]`` (or 0, where 0 means "off")."""

    def parse(value: Any) -> float:
        number = float(_number(value, float))
        if math.isnan(number) or not (number == 0 and zero or low <= number <= high):
            raise ValueError("out of range")
        return number

    return parse


def count(low: int, high: int) -> Callable[[Any], int]:
    """A whole number within ``[low, high]``."""

    def parse(value: Any) -> int:
        number = int(_number(value, int))
        if not low <= number <= high:
            raise ValueError("out of range")
        return number

    return parse


def path(value: Any) -> str:
    """A URL path answered before the app (``"/healthz"``), or ``""``: off."""
    if not isinstance(value, str):
        raise ValueError("not a string")
    text = value.strip()
    if text and (not text.startswith("/") or any(c in text for c in " ?#\t\r\n")):
        raise ValueError("not a path")
    return text


def interface(value: Any) -> str:
    """The interface ``flask serve --server granian`` serves the app through."""
    text = value.strip().lower() if isinstance(value, str) else None
    if text not in ("asgi", "wsgi"):
        raise ValueError("not 'asgi' or 'wsgi'")
    return text


def broadcast_url(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("not a string")
    text = value.strip()
    if text and text.split("://", 1)[0] not in ("memory", "redis", "rediss", "unix"):
        raise ValueError("unsupported backend")
    return text


def origins(value: Any) -> list[str]:
    patterns = split_list(value) if isinstance(value, str) else value
    compile_patterns(patterns)  # the same parse as the handshake's: fails now, not then
    return [pattern.strip() for pattern in patterns]


def gc_setting(value: Any) -> str:
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise ValueError("not a string")
    parse_gc_setting(value)
    return str(value).strip().lower()


def _declare(*settings: Setting) -> dict[str, Setting]:
    return {setting.key: setting for setting in settings}


_SECONDS = "seconds as a number, 0 (off) or from {low:g} to {high:g}"

SETTINGS: dict[str, Setting] = _declare(
    Setting(
        "FLASK_ASGI_THREADS",
        256,
        count(1, 10_000),
        "a whole number from 1 to 10000",
        "Size of the worker-thread pool that runs sync endpoints and run_sync() calls.",
    ),
    Setting(
        "FLASK_ASGI_RESPONSE_BUFFER",
        256 * 1024,
        count(0, _GIB),
        "bytes, a whole number from 0 to 1073741824",
        "Responses with a Content-Length up to this many bytes are sent as one message.",
    ),
    Setting(
        "FLASK_ASGI_BODY_PREREAD",
        1024 * 1024,
        count(0, _GIB),
        "bytes, a whole number from 0 to 1073741824",
        "A sync endpoint's body is received on the loop, up to this many bytes, before it"
        " takes a worker thread.",
    ),
    Setting(
        "FLASK_ASGI_BODY_TIMEOUT",
        60.0,
        seconds(0.001, _DAY),
        _SECONDS.format(low=0.001, high=_DAY),
        "Seconds, in all, a request may keep the server waiting for its body. 0: no limit.",
    ),
    Setting(
        "FLASK_ASGI_MAX_WAITING",
        2048,
        count(0, 1_000_000),
        "a whole number from 0 to 1000000",
        "Sync requests that may wait for a worker thread at once; one more gets 503. 0: no cap.",
    ),
    Setting(
        "FLASK_ASGI_QUEUE_TIMEOUT",
        10.0,
        seconds(0.001, _HOUR),
        _SECONDS.format(low=0.001, high=_HOUR),
        "Seconds a sync request may wait for a worker thread; then 503. 0: no limit.",
    ),
    Setting(
        "FLASK_ASGI_MAX_REQUESTS",
        0,
        count(0, 1_000_000),
        "a whole number from 0 to 1000000",
        "HTTP requests in flight at once; one more gets 503. 0: no cap.",
    ),
    Setting(
        "FLASK_ASGI_REQUEST_TIMEOUT",
        0.0,
        seconds(0.001, _DAY),
        _SECONDS.format(low=0.001, high=_DAY),
        "Seconds a request may run (async: cancelled, 504; sync: logged). 0: no limit.",
    ),
    Setting(
        "FLASK_ASGI_SHUTDOWN_TIMEOUT",
        10.0,
        seconds(0.0, _HOUR),
        "seconds as a number from 0 to 3600",
        "Seconds a shutdown lets in-flight requests and background tasks finish.",
    ),
    Setting(
        "FLASK_ASGI_DRAIN_DELAY",
        0.0,
        seconds(0.0, _HOUR),
        "seconds as a number from 0 to 3600",
        "On SIGTERM, seconds to go on serving (readiness fails) before shutting down.",
    ),
    Setting(
        "FLASK_ASGI_HEADER_TIMEOUT",
        10.0,
        seconds(0.1, _HOUR),
        _SECONDS.format(low=0.1, high=_HOUR),
        "Seconds a connection may take to send a request's headers. 0: never.",
    ),
    Setting(
        "FLASK_ASGI_WEBSOCKET_MAX_MESSAGE",
        1024 * 1024,
        count(0, _GIB),
        "bytes, a whole number from 0 to 1073741824",
        "Largest WebSocket message a handler accepts (larger: close 1009, by the server as it"
        " arrives under flask serve). 0: no limit.",
    ),
    Setting(
        "FLASK_ASGI_WEBSOCKET_IDLE_TIMEOUT",
        0.0,
        seconds(0.001, _DAY),
        _SECONDS.format(low=0.001, high=_DAY),
        "Seconds a WebSocket may go without a message either way (then close 1001). 0: never.",
    ),
    Setting(
        "FLASK_ASGI_WEBSOCKET_ALLOWED_ORIGINS",
        [],
        origins,
        "a list of origins or origin patterns ('https://app.example.com',"
        " 'https://*.example.com', '*'); comma-separated in the environment",
        "Origins, besides the app's own, whose pages may open WebSockets.",
    ),
    Setting(
        "FLASK_ASGI_BROADCAST_URL",
        "",
        broadcast_url,
        "'' or 'memory://' (in-process), or a 'redis://', 'rediss://' or 'unix://' URL",
        "asgi.broadcast's backend.",
    ),
    Setting(
        "FLASK_ASGI_BROADCAST_TIMEOUT",
        5.0,
        seconds(0.01, _HOUR, zero=False),
        "seconds as a number from 0.01 to 3600",
        "Seconds a broadcast publish or subscribe may wait for Redis; also how long an"
        " unanswered ping means the connection is lost.",
    ),
    Setting(
        "FLASK_ASGI_MOUNT_LIFESPAN_TIMEOUT",
        30.0,
        seconds(0.001, _HOUR, zero=False),
        "seconds as a number from 0.001 to 3600",
        "Seconds a mounted ASGI app gets to answer each lifespan message.",
    ),
    Setting(
        "FLASK_ASGI_BLOCKING_THRESHOLD",
        0.5,
        seconds(0.01, _HOUR),
        _SECONDS.format(low=0.01, high=_HOUR),
        "Seconds the loop may be blocked before the watchdog logs the blocking code. 0: off.",
    ),
    Setting(
        "FLASK_ASGI_HEALTH_PATH",
        "",
        path,
        "'' (off) or a path starting with '/'",
        "Liveness probe path, answered before the app.",
    ),
    Setting(
        "FLASK_ASGI_READY_PATH",
        "",
        path,
        "'' (off) or a path starting with '/'",
        "Readiness probe path, answered before the app.",
    ),
    Setting(
        "FLASK_ASGI_METRICS_PATH",
        "",
        path,
        "'' (off) or a path starting with '/'",
        "Prometheus metrics path, answered before the app.",
    ),
    Setting(
        "FLASK_ASGI_GC",
        "auto",
        gc_setting,
        "'auto', 'off', or 1 to 3 comma-separated positive whole numbers ('50000,10,10')",
        "Garbage-collector tuning of a serving process.",
    ),
    Setting(
        "FLASK_ASGI_INTERFACE",
        "asgi",
        interface,
        "'asgi' or 'wsgi' (an all-sync app on --server granian)",
        "How flask serve --server granian calls the app ('wsgi': faster, fewer defences).",
    ),
)

#: Each key's default, as declared.
DEFAULTS: dict[str, Any] = {key: setting.default for key, setting in SETTINGS.items()}

_PROBES = ("FLASK_ASGI_HEALTH_PATH", "FLASK_ASGI_READY_PATH", "FLASK_ASGI_METRICS_PATH")


def _unknown(keys: Any) -> list[tuple[str, str]]:
    """``(key, hint)`` for each ``FLASK_ASGI_*`` key that is no setting (a typo, most often:
    a misspelt protection would otherwise be silently off)."""
    found = []
    for key in keys:
        if key.startswith(PREFIX) and key not in SETTINGS and key not in INTERNAL_ENV:
            close = difflib.get_close_matches(key, SETTINGS, n=1)
            found.append((key, f"did you mean {close[0]}?" if close else "see configuration.md"))
    return found


def parse_setting(key: str, value: Any, source: str) -> Any:
    """``value`` of ``key`` as flask-asgi uses it, or :class:`SettingError`."""
    setting = SETTINGS[key]
    try:
        return setting.parse(value)
    except (ValueError, TypeError, OverflowError):
        raise SettingError(key, value, setting.allowed, source) from None


def apply_settings(app: Flask, environ: Mapping[str, str] | None = None) -> None:
    """Check every setting of ``app`` and write the value in effect into ``app.config``.

    A key missing from ``app.config`` is taken from the environment, else the default.
    Raises :class:`SettingError` for a bad value, an unknown ``FLASK_ASGI_*`` key, or two
    probes on one path; ``app.config`` is left unchanged then.
    """
    env = os.environ if environ is None else environ
    config = app.config
    for key, hint in _unknown(config):
        raise SettingError(key, config[key], f"no such setting ({hint})", "app.config")
    for key, hint in _unknown(env):  # other tools may share the prefix: a warning only
        logger.warning("%s in the environment is no flask-asgi setting (%s)", key, hint)
    values: dict[str, Any] = {}
    for key, setting in SETTINGS.items():
        if key in config:
            values[key] = parse_setting(key, config[key], "app.config")
        elif key in env:
            values[key] = parse_setting(key, env[key], "the environment")
        else:
            values[key] = setting.parse(setting.default)  # a fresh list: the app's own
    used: dict[str, str] = {}
    for key in _PROBES:
        if values[key] and values[key] in used:
            raise SettingError(key, values[key], f"already {used[values[key]]}'s path", "config")
        used[values[key]] = key
    config.update(values)
