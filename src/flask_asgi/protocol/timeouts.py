"""FLASK_ASGI_REQUEST_TIMEOUT and ``@flask_asgi.timeout``: how long one request may run.

The clock starts when the endpoint starts (an async request's greenlet starts, a worker
thread takes a sync request) and stops at the response's last message, so a streamed
response counts whole (``@flask_asgi.timeout(None)`` exempts a stream or a long poll).

* An async endpoint runs in the request's task: past its timeout the task is cancelled,
  as when the client leaves. The view gets ``CancelledError`` (its message names the
  timeout) at its current ``await``, and Flask's teardown sees it; ``http.py`` then answers
  504, or, if the response had started, ends it unfinished so the server closes the
  connection (a client must not take a cut stream for a whole one).
* A sync endpoint runs in a worker thread, which Python cannot interrupt: one warning
  names it, and it runs to its end.

Both are counted in ``request_timeouts_total``. Which timeout applies is the view's mark
(``routes.RouteIndex`` finds it), else the config, read per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from flask import Flask

from ..ground.counters import counters
from .dispatch import match_endpoint

logger = logging.getLogger("flask_asgi")

CONFIG_KEY = "FLASK_ASGI_REQUEST_TIMEOUT"


def config_seconds(configured: Any) -> float | None:
    """FLASK_ASGI_REQUEST_TIMEOUT's value (a number, or a numeric string) as seconds, or None
    for no limit. The handler calls it only for a truthy value: 0, the default, costs no call."""
    seconds = float(configured)
    return seconds if seconds > 0 else None


class RequestTimer:
    """One request's timeout, kept on the loop: it cancels ``task`` (an async endpoint) or,
    with no task (a sync one), only logs."""

    __slots__ = ("seconds", "app", "environ", "is_done", "task", "expired", "_loop", "_handle")

    def __init__(
        self,
        seconds: float,
        app: Flask,
        environ: dict[str, Any],
        is_done: Callable[[], bool],
        task: asyncio.Task[Any] | None,
    ) -> None:
        self.seconds = seconds
        self.app = app
        self.environ = environ
        self.is_done = is_done  # the response's last message is on its way
        self.task = task
        self.expired = False
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None | bool = None  # False: cancelled

    def start(self) -> None:
        """Start the clock (on the loop)."""
        if self._handle is None:
            started = time.monotonic()
            self._handle = self._loop.call_later(self.seconds, self._expire, started)

    def start_threadsafe(self) -> None:
        """Start the clock from the worker thread that took the request."""
        self._loop.call_soon_threadsafe(self.start)

    def cancel(self) -> None:
        handle, self._handle = self._handle, False
        if isinstance(handle, asyncio.TimerHandle):
            handle.cancel()

    def _expire(self, started: float) -> None:
        if self._handle is False or self.is_done():
            return
        self.expired = True
        counters.add("request_timeouts_total")
        environ = self.environ
        what = "{} {} (endpoint {!r})".format(
            environ.get("REQUEST_METHOD"),
            environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""),
            match_endpoint(self.app, environ),
        )
        elapsed = time.monotonic() - started
        if self.task is None:
            logger.warning(
                "%s: the sync view is still running after %.1f s, past its request timeout"
                " (%g s, FLASK_ASGI_REQUEST_TIMEOUT or @flask_asgi.timeout); a worker thread"
                " cannot be interrupted, so it runs on",
                what,
                elapsed,
                self.seconds,
            )
            return
        logger.warning(
            "%s: cancelled after %.1f s, past its request timeout (%g s,"
            " FLASK_ASGI_REQUEST_TIMEOUT or @flask_asgi.timeout)",
            what,
            elapsed,
            self.seconds,
        )
        self.task.cancel(f"request timeout ({self.seconds:g} s) reached")
