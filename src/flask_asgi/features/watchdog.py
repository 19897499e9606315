"""The loop watchdog: name the code that blocks the event loop, while it blocks.

A blocking call in async code (``time.sleep``, a sync database driver, a CPU-bound loop)
stops every request of the process, and neither the ASGI server nor asyncio says so. The
watchdog is two cheap parts:

* on the loop, a heartbeat: a ``call_later`` callback every ``threshold / 10`` seconds that
  stamps ``time.monotonic()`` and counts how late it ran (the loop-lag histogram);
* in a daemon thread, a watcher that looks at the stamp every ``threshold / 20`` seconds.
  When the loop has not come round for ``FLASK_ASGI_BLOCKING_THRESHOLD`` seconds, the
  loop thread is still blocked, so its stack (``sys._current_frames()``: the running
  request greenlet's frames are the thread's frames) shows the culprit. The watcher logs
  one warning naming the request (from the ``environ`` and ``ctx`` locals of Flask's
  ``wsgi_app`` frame on that stack: nothing is paid per request) and the innermost
  application frames, blocking call last. When the loop comes round again, a second line
  gives how long it was blocked.

Repeats from the same code site are logged at most once a minute (the count of the
suppressed ones is given with the next). Started at lifespan startup (``AppState``),
so it runs under any ASGI server. asyncio's debug mode (``slow_callback_duration``) only
reports after the fact, without a stack, and does not run under uvicorn's default uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import sysconfig
import threading
import time
from collections import deque
from types import FrameType
from typing import Any

from flask import Flask

from ..ground.app_state import AppState, app_state

logger = logging.getLogger("flask_asgi")

CONFIG_KEY = "FLASK_ASGI_BLOCKING_THRESHOLD"
#: The same code site is reported at most once in this many seconds.
REPEAT_INTERVAL = 60.0
#: How many application frames a warning shows (innermost ones).
MAX_FRAMES = 8


def _package_dir(name: str) -> str | None:
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None)
    return os.path.dirname(path) + os.sep if path else None


def _both(path: str) -> set[str]:
    return {path.rstrip(os.sep) + os.sep, os.path.realpath(path) + os.sep}


def _plumbing_dirs() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Where the frames that are not the application's live: (flask-asgi, Flask, Werkzeug,
    greenlet and the servers' packages), (the standard library), (site-packages, which
    sits inside the standard library's directory on some layouts and is not plumbing)."""
    import flask
    import werkzeug

    packages = _both(os.path.dirname(os.path.dirname(__file__)))
    for module in (flask, werkzeug):
        packages |= _both(os.path.dirname(module.__file__ or ""))
    for name in ("greenlet", "uvicorn", "uvloop", "h11", "httptools", "blinker", "click"):
        found = _package_dir(name)
        if found:
            packages |= _both(found)
    paths = sysconfig.get_paths()
    stdlib = _both(paths["stdlib"]) | _both(paths["platstdlib"])
    site = _both(paths["purelib"]) | _both(paths["platlib"])
    return tuple(packages), tuple(stdlib), tuple(site)


class Watchdog:
    """Watch one running loop for ``threshold``-second stalls (see the module docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, state: AppState, threshold: float):
        self.loop = loop
        self.state = state
        self.threshold = threshold
        self.interval = threshold / 10
        self.check = threshold / 20
        self.loop_thread = threading.get_ident()
        self._packages, self._stdlib, self._site = _plumbing_dirs()
        self._handle: asyncio.TimerHandle | None = None
        self._stop = threading.Event()
        #: Gaps (seconds) of heartbeats that ran later than the threshold (loop -> watcher).
        self._ended: deque[float] = deque()
        self._stall: dict[str, Any] | None = None  # the stall being reported, if any
        self._last_report: dict[tuple[str, int], float] = {}
        self._suppressed: dict[tuple[str, int], int] = {}
        self._thread = threading.Thread(target=self._watch, name="flask-asgi-watchdog", daemon=True)

    # -- loop side -------------------------------------------------------------------------

    def start(self) -> None:
        self.state.heartbeat = time.monotonic()
        self.state.heartbeat_interval = self.interval
        self._handle = self.loop.call_later(self.interval, self._beat)
        self._thread.start()

    def _beat(self) -> None:
        now = time.monotonic()
        state = self.state
        gap = now - state.heartbeat
        state.heartbeat = now
        state.record_lag(max(gap - self.interval, 0.0))
        if gap > self.threshold:
            self._ended.append(gap)
        self._handle = self.loop.call_later(self.interval, self._beat)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._stop.set()
        self.state.heartbeat = 0.0
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(1)

    # -- watcher thread --------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stop.wait(self.check):
            if self.loop.is_closed():
                return
            # The startup failed after starting us: no shutdown will come to stop us.
            if self.state.lifecycle.phase == "failed":
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    self.loop.call_soon_threadsafe(self.stop)
                return
            while self._ended:
                self._finish(self._ended.popleft())
            beat = self.state.heartbeat
            if self._stall is None and beat and time.monotonic() - beat > self.threshold:
                frame = sys._current_frames().get(self.loop_thread)
                if frame is None:
                    continue
                stall = self._describe(frame, time.monotonic() - beat)
                del frame
                if self.state.heartbeat == beat:  # still blocked: the stack is the culprit's
                    self._stall = stall
                    self._report(stall)

    def _finish(self, gap: float) -> None:
        """The loop came round after ``gap`` seconds: close the stall being reported."""
        self.state.stalls += 1
        stall, self._stall = self._stall, None
        if stall is None:  # the watcher could not look in time (a C call held the GIL)
            logger.warning(
                "flask-asgi: the event loop was blocked for %.2f s (stall %d); the watchdog"
                " could not read its stack while it was blocked",
                gap,
                self.state.stalls,
            )
        elif stall["logged"]:
            logger.warning(
                "flask-asgi: stall %d ended: the event loop did not come round for %.2f s%s",
                self.state.stalls,
                gap,
                f",{_serving(stall['request'])}" if stall["request"] else "",
            )

    def _report(self, stall: dict[str, Any]) -> None:
        site = stall["site"]
        now = time.monotonic()
        if now - self._last_report.get(site, -REPEAT_INTERVAL) < REPEAT_INTERVAL:
            self._suppressed[site] = self._suppressed.get(site, 0) + 1
            stall["logged"] = False
            return
        self._last_report[site] = now
        suppressed = self._suppressed.pop(site, 0)
        stall["logged"] = True
        lines = "".join(
            f"\n    {name} at {filename}:{lineno}" for name, filename, lineno in stall["frames"]
        )
        logger.warning(
            "flask-asgi: the event loop has been blocked for %.2f s (stall %d)%s; %s%s%s",
            stall["so_far"],
            self.state.stalls + 1,
            _serving(stall["request"]),
            "application frames, blocking call last:"
            if stall["frames"]
            else "no application frame",
            lines,
            f"\n    ({suppressed} more stall(s) here in the last minute not shown)"
            if suppressed
            else "",
        )

    def _is_plumbing(self, filename: str) -> bool:
        if filename.startswith(("<", *self._packages)):
            return True
        return filename.startswith(self._stdlib) and not filename.startswith(self._site)

    def _describe(self, top: FrameType, so_far: float) -> dict[str, Any]:
        """The stall seen from the loop thread's stack: request, application frames, site."""
        frames: list[FrameType] = []
        frame: FrameType | None = top
        while frame is not None:
            frames.append(frame)
            frame = frame.f_back
        frames.reverse()  # outermost first
        request = ""
        for frame in frames:
            if frame.f_code.co_name in _REQUEST_FRAMES:
                request = _request_of(frame) or request
        if not request:
            request = _task_of(self.loop)
        app_frames = [
            (f.f_code.co_name, f.f_code.co_filename, f.f_lineno)
            for f in frames
            if not self._is_plumbing(f.f_code.co_filename)
        ][-MAX_FRAMES:]
        innermost = frames[-1] if frames else None
        if innermost is not None and (
            not app_frames
            or app_frames[-1][1:]
            != (
                innermost.f_code.co_filename,
                innermost.f_lineno,
            )
        ):
            app_frames.append(
                (
                    f"(inside) {innermost.f_code.co_name}",
                    innermost.f_code.co_filename,
                    innermost.f_lineno,
                )
            )
        site = app_frames[-1][1:] if app_frames else ("", 0)
        return {
            "request": request,
            "frames": app_frames,
            "site": site,
            "so_far": so_far,
            "logged": False,
        }


#: Frames whose ``environ`` and ``ctx`` locals say which request is being served: Flask's
#: ``wsgi_app`` and its WebSocket counterpart in protocol/websocket/pipeline.py.
_REQUEST_FRAMES = frozenset({"wsgi_app", "run_connection"})


def _serving(request: str) -> str:
    if not request:
        return ""
    return f" in {request}" if request.startswith("task ") else f" serving {request}"


def _request_of(frame: FrameType) -> str:
    """``GET /path (endpoint 'name')`` from the locals of Flask's ``wsgi_app`` frame."""
    try:
        local = frame.f_locals
        environ = local.get("environ")
        if not isinstance(environ, dict):
            return ""
        path = f"{environ.get('SCRIPT_NAME', '')}{environ.get('PATH_INFO', '')}"
        scope = environ.get("asgi.scope")
        websocket = isinstance(scope, dict) and scope.get("type") == "websocket"
        text = f"{'WebSocket' if websocket else environ.get('REQUEST_METHOD', '')} {path}"
        try:
            rule = local["ctx"].request.url_rule
        except Exception:
            rule = None
        if rule is not None:
            text += f" (endpoint {rule.endpoint!r})"
        return text
    except Exception:  # another thread's frame: anything may be half-made; never fail
        return ""


def _task_of(loop: asyncio.AbstractEventLoop) -> str:
    try:
        task = asyncio.current_task(loop)
    except Exception:
        return ""
    return f"task {task.get_name()!r}" if task is not None else ""


# -- lifespan steps (AppState.startup_steps / .shutdown_steps) ------------------------


def startup_step(app: Flask) -> None:
    """Start the watchdog on the running loop (threshold 0: off)."""
    threshold = float(app.config.get(CONFIG_KEY, 0) or 0)
    state = app_state(app)
    old, state.watchdog = state.watchdog, None
    if isinstance(old, Watchdog):
        old.stop()
    if threshold <= 0:
        return
    watchdog = state.watchdog = Watchdog(asyncio.get_running_loop(), state, threshold)
    watchdog.start()


async def shutdown_step(app: Flask) -> None:
    state = app_state(app)
    watchdog, state.watchdog = state.watchdog, None
    if isinstance(watchdog, Watchdog):
        watchdog.stop()
