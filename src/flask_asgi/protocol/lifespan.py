"""ASGI lifespan: ``before_serving`` / ``while_serving`` / ``after_serving`` hooks.

The hooks run on the server loop inside one app context that lives from startup to
shutdown, so resources they create (HTTP clients, database engines) belong to the loop that
serves every request. Sync hooks run in a greenlet and may use ``await_``.
"""

from __future__ import annotations

import inspect
import logging
import traceback
from collections.abc import AsyncGenerator, Callable, Generator
from contextlib import AsyncExitStack
from typing import Any

from flask import Flask

from ..ground.app_state import AppState
from ..ground.asgi_types import Receive, Send
from ..ground.bridge import greenlet_await, run_in_greenlet
from ..ground.settings import apply_settings

logger = logging.getLogger("flask_asgi")

Generators = list[AsyncGenerator[Any, None] | Generator[Any, None, None]]


_DONE = object()


async def _anext(gen: Any, *default: Any) -> Any:
    return await anext(gen, *default)


async def _call(func: Callable[[], Any]) -> Any:
    if inspect.iscoroutinefunction(func):
        return await greenlet_await(func())
    return await run_in_greenlet(func)


async def startup(
    app: Flask, hooks: AppState, around: AsyncExitStack, state: dict[str, Any]
) -> Generators:
    """Run the startup hooks; return the ``while_serving`` generators, paused at their yield.
    Then enter the ``around`` steps (mounted apps) into ``around``."""
    running: Generators = []
    apply_settings(app)  # config set after ASGI(app) is checked too: a bad value stops here
    for step in hooks.startup_steps:  # flask-asgi's own (the background tasks' loop...)
        step(app)
    for func in hooks.before_serving:
        await _call(func)
    for gen_func in hooks.while_serving:
        gen = gen_func()
        if inspect.isasyncgen(gen):
            await greenlet_await(_anext(gen))
        else:
            await run_in_greenlet(next, gen, None)
        running.append(gen)
    for enter in hooks.around:
        await around.enter_async_context(enter(app, state))
    hooks.lifecycle.started()
    return running


async def shutdown(
    app: Flask, hooks: AppState, running: Generators, around: AsyncExitStack
) -> None:
    """Resume the ``while_serving`` generators (last first), then run ``after_serving``."""
    # The stop signal, if the server did not set it earlier (flask serve sets it as soon as
    # the shutdown starts; another server only sends lifespan.shutdown once connections
    # have closed).
    hooks.lifecycle.stop()
    try:
        await _shutdown(app, hooks, running, around)
    finally:
        hooks.lifecycle.stopped()


async def _shutdown(
    app: Flask, hooks: AppState, running: Generators, around: AsyncExitStack
) -> None:
    # flask-asgi's own first (the background-task drain...): they may use the resources.
    for stop in hooks.shutdown_steps:
        await stop(app)
    errors: list[BaseException] = []
    try:  # the mounted apps, last first, while the hooks' resources are still open
        await around.aclose()
    except Exception as exc:
        errors.append(exc)
    for gen in reversed(running):
        try:
            if inspect.isasyncgen(gen):
                more = await greenlet_await(_anext(gen, _DONE)) is not _DONE
            else:
                more = await run_in_greenlet(next, gen, _DONE) is not _DONE
        except Exception as exc:
            errors.append(exc)
        else:
            if more:
                errors.append(RuntimeError(f"while_serving generator {gen!r} yielded twice"))
    for func in hooks.after_serving:
        try:
            await _call(func)
        except Exception as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


async def handle_lifespan(
    app: Flask, hooks: AppState, scope: dict[str, Any], receive: Receive, send: Send
) -> None:
    """The ASGI entry point for ``lifespan`` scopes."""
    message = await receive()
    assert message["type"] == "lifespan.startup"
    lifecycle = hooks.lifecycle  # what readiness answers from
    lifecycle.starting()
    with app.app_context():
        around = AsyncExitStack()
        try:
            running = await startup(app, hooks, around, scope.get("state", {}))
        except BaseException as exc:
            lifecycle.failed()
            try:
                await around.aclose()  # the mounted apps that did start
            except Exception:
                logger.exception("flask-asgi: stopping the mounted apps after a failed startup")
            await _report_failure(send, "startup", exc)
            return
        await send({"type": "lifespan.startup.complete"})
        message = await receive()
        assert message["type"] == "lifespan.shutdown"
        try:
            await shutdown(app, hooks, running, around)
        except BaseException as exc:
            await _report_failure(send, "shutdown", exc)
            return
        await send({"type": "lifespan.shutdown.complete"})


async def _report_failure(send: Send, phase: str, exc: BaseException) -> None:
    """Log a failed startup/shutdown once, and tell the server (which exits on startup)."""
    logger.error("flask-asgi %s failed", phase, exc_info=exc)
    text = "".join(traceback.format_exception_only(exc)).strip()
    await send({"type": f"lifespan.{phase}.failed", "message": text})
