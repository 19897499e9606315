"""Other ASGI apps served beside Flask: ``asgi.mount("/socket.io", sio_app)``.

Routing follows the ASGI spec as Starlette's ``Mount`` does: a request whose path (below
the server's ``root_path``) is the prefix or lies under it goes to the mounted app with
``path`` unchanged (the full path) and ``root_path`` extended by the prefix; the longest
prefix wins. Everything else goes to Flask. The mounted apps' lifespans run as a step of
flask-asgi's lifespan (``AppState.around``): started in mount order once every startup
hook has opened its resources, stopped last first before the shutdown hooks close them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from flask import Flask

from ..ground.app_state import AppState, state_of
from ..ground.asgi_types import Receive, Send

logger = logging.getLogger("flask_asgi")

ASGIApp = Callable[[dict[str, Any], Receive, Send], Coroutine[Any, Any, None]]


def add_mount(hooks: AppState, prefix: str, app: Any) -> None:
    """Record ``app`` under ``prefix``; bad prefixes and non-callables are refused."""
    if not isinstance(prefix, str) or not prefix.startswith("/") or prefix.rstrip("/") == "":
        raise ValueError(
            f"mount prefix must be a path such as '/api' (starting with '/', not '/'): {prefix!r}"
        )
    if not callable(app):
        raise TypeError(f"asgi.mount({prefix!r}, ...) needs an ASGI app (a callable): {app!r}")
    prefix = prefix.rstrip("/")
    if any(existing == prefix for existing, _ in hooks.mounts):
        raise ValueError(f"an ASGI app is already mounted at {prefix!r}")
    hooks.mounts.append((prefix, app))
    if serving not in hooks.around:
        hooks.around.append(serving)


class MountRouter:
    """An ASGI app that sends ``http`` and ``websocket`` scopes under a mount to its app,
    and everything else (other paths, ``lifespan``) to ``inner`` (Flask)."""

    def __init__(self, inner: ASGIApp, mounts: list[tuple[str, Any]]) -> None:
        self.inner = inner
        self.mounts = sorted(mounts, key=lambda mount: len(mount[0]), reverse=True)

    def match(self, scope: dict[str, Any]) -> tuple[str, Any] | None:
        root_path: str = scope.get("root_path", "")
        path: str = scope["path"]
        if root_path and path.startswith(root_path):
            path = path[len(root_path) :]
        for prefix, app in self.mounts:
            if path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/"):
                return prefix, app
        return None

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            found = self.match(scope)
            if found is not None:
                prefix, app = found
                child = dict(scope, root_path=scope.get("root_path", "") + prefix)
                await app(child, receive, send)
                return
        await self.inner(scope, receive, send)


@contextlib.asynccontextmanager
async def serving(app: Flask, state: dict[str, Any]) -> AsyncIterator[None]:
    """The lifespans of every app mounted on ``app``: the ``AppState.around`` step."""
    hooks = state_of(app)
    timeout = float(app.config["FLASK_ASGI_MOUNT_LIFESPAN_TIMEOUT"])
    async with contextlib.AsyncExitStack() as stack:
        for prefix, mounted in hooks.mounts if hooks is not None else ():
            await stack.enter_async_context(_lifespan(prefix, mounted, state, timeout))
        yield


class _Lifespan:
    """One mounted app's lifespan, driven as a server would drive it."""

    def __init__(self, prefix: str, app: Any, state: dict[str, Any]) -> None:
        self.prefix = prefix
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
        scope["state"] = state
        self.task = asyncio.get_running_loop().create_task(
            app(scope, self.inbox.get, self.outbox.put), name=f"flask-asgi lifespan {prefix}"
        )

    async def ask(self, phase: str, timeout: float) -> dict[str, Any] | None:
        """Send ``lifespan.<phase>``; the answer, or None if the app does not speak lifespan:
        it ended (or raised) without an answer, answered with something else (a plain
        Response), or gave none in ``timeout`` seconds."""
        await self.inbox.put({"type": f"lifespan.{phase}"})
        getter = asyncio.ensure_future(self.outbox.get())
        done, _ = await asyncio.wait(
            {getter, self.task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if getter in done:
            answer: dict[str, Any] = getter.result()
            if str(answer.get("type")).startswith("lifespan."):
                return answer
            reason = f"it answered lifespan.{phase} with {answer.get('type')!r}"
        else:
            getter.cancel()
            if self.task in done:
                error = None if self.task.cancelled() else self.task.exception()
                reason = f"it raised {error!r}" if error is not None else "it returned"
            else:
                reason = f"no answer to lifespan.{phase} in {timeout:g}s"
                reason += " (FLASK_ASGI_MOUNT_LIFESPAN_TIMEOUT)"
        level = logging.WARNING if self.task not in done else logging.INFO
        logger.log(
            level,
            "flask-asgi: the ASGI app mounted at %r does not speak lifespan: %s",
            self.prefix,
            reason,
        )
        await self.stop()
        return None

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.task

    def check(self, answer: dict[str, Any], phase: str) -> None:
        if answer["type"] == f"lifespan.{phase}.failed":
            reason = answer.get("message") or "no message"
            raise RuntimeError(f"the ASGI app mounted at {self.prefix!r} failed {phase}: {reason}")
        if answer["type"] != f"lifespan.{phase}.complete":
            raise RuntimeError(
                f"the ASGI app mounted at {self.prefix!r} answered lifespan.{phase} with"
                f" {answer['type']!r}"
            )


@contextlib.asynccontextmanager
async def _lifespan(
    prefix: str, app: Any, state: dict[str, Any], timeout: float
) -> AsyncIterator[None]:
    lifespan = _Lifespan(prefix, app, state)
    answer = await lifespan.ask("startup", timeout)
    if answer is None:
        yield
        return
    try:
        lifespan.check(answer, "startup")
    except BaseException:
        await lifespan.stop()
        raise
    try:
        yield
    finally:
        answer = await lifespan.ask("shutdown", timeout)
        if answer is not None:
            try:
                lifespan.check(answer, "shutdown")
            finally:
                # A well-behaved app returns after shutdown.complete; don't wait forever.
                done, _ = await asyncio.wait({lifespan.task}, timeout=timeout)
                if not done:
                    await lifespan.stop()
