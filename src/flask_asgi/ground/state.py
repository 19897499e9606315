"""Per-app state that every floor may need, kept in ``app.extensions["flask_asgi"]``.

Lower floors reach the app's ``ASGI`` object and its hooks through this module, never by
importing the façade (which stands on them).
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from flask import Flask, current_app
from werkzeug.local import LocalProxy

from .lifecycle import Lifecycle, StopSignal

EXTENSION_KEY = "flask_asgi"


class ServingHooks:
    """The lifespan hooks registered for an app, kept in ``app.extensions``.

    It holds no reference to the app or to the ``ASGI`` object (only a weak one), so
    attaching flask-asgi creates no reference cycle: an app is freed as soon as its last
    reference goes, as Flask promises. Hooks live here, not on the ``ASGI`` object, so
    ``flask serve`` finds them even when the ``ASGI`` object that registered them is gone.
    """

    def __init__(self) -> None:
        self.before_serving: list[Callable[[], Any]] = []
        self.after_serving: list[Callable[[], Any]] = []
        self.while_serving: list[Callable[[], Any]] = []
        #: flask-asgi's own steps, run before the user's hooks at startup (``fn(app)``)...
        self.startup_steps: list[Callable[[Flask], None]] = []
        #: ... and before them at shutdown (``await fn(app)``: drains, stop signals).
        self.shutdown_steps: list[Callable[[Flask], Awaitable[None]]] = []
        #: ... and steps entered after every startup hook, exited (last first) after the
        #: ``shutdown_steps`` and before the user's shutdown hooks: the lifespans of mounted
        #: ASGI apps, which may use what those hooks open (``fn(app, lifespan_state)``).
        self.around: list[Callable[[Flask, dict[str, Any]], AbstractAsyncContextManager[Any]]] = []
        #: ASGI apps served beside Flask (``asgi.mount``): ``(prefix, app)`` in mount order.
        self.mounts: list[tuple[str, Any]] = []
        #: ASGI middleware around the whole app (``asgi.add_middleware``): ``(cls, options)``.
        self.middleware: list[tuple[Any, dict[str, Any]]] = []
        #: Where serving is (health checks read it) and the stop signal for long-lived work.
        self.lifecycle = Lifecycle()
        self.asgi: weakref.ref[Any] | None = None
        #: The class that makes a new ``ASGI`` object for the app when none is alive.
        self.factory: Callable[[Flask], Any] | None = None

    def adopt(self, other: ServingHooks) -> None:
        self.before_serving += other.before_serving
        self.after_serving += other.after_serving
        self.while_serving += other.while_serving
        for step in other.startup_steps:
            if step not in self.startup_steps:
                self.startup_steps.append(step)
        for stop in other.shutdown_steps:
            if stop not in self.shutdown_steps:
                self.shutdown_steps.append(stop)
        for around in other.around:
            if around not in self.around:
                self.around.append(around)
        self.mounts += other.mounts
        self.middleware += other.middleware


def hooks_of(app: Flask) -> ServingHooks | None:
    hooks = app.extensions.get(EXTENSION_KEY)
    return hooks if isinstance(hooks, ServingHooks) else None


def asgi_of(app: Flask) -> Any:
    """The ``ASGI`` object serving ``app``, making one (with the app's hooks) if none is
    alive. Raises ``RuntimeError`` if flask-asgi was never attached to ``app``."""
    hooks = hooks_of(app)
    if hooks is None or hooks.factory is None:
        raise RuntimeError(f"flask-asgi is not attached to {app!r}: call ASGI(app) first")
    asgi = hooks.asgi() if hooks.asgi is not None else None
    return asgi if asgi is not None else hooks.factory(app)


def lifecycle_of(app: Flask) -> Lifecycle | None:
    hooks = hooks_of(app)
    return hooks.lifecycle if hooks is not None else None


def _current_stop_signal() -> StopSignal:
    lifecycle = lifecycle_of(current_app._get_current_object())  # type: ignore[attr-defined]
    if lifecycle is None:
        raise RuntimeError("flask_asgi.stopping: flask-asgi is not attached to the current app")
    return lifecycle.stopping


#: The current app's stop signal (``flask_asgi.stopping``): needs an app context.
stopping: StopSignal = LocalProxy(_current_stop_signal)  # type: ignore[assignment]
