"""ASGI middleware around the whole app: ``asgi.add_middleware(GZipMiddleware, minimum_size=500)``.

Starlette's convention: each middleware is ``cls(app, **options)``, an ASGI app wrapping the
next one; the last one added is the outermost. The stack wraps everything the server
calls (lifespan, the mounted apps, Flask), so every server and ``flask serve`` get it.
"""

from __future__ import annotations

from typing import Any

from ..ground.app_state import AppState
from .mounts import ASGIApp, MountRouter


def add_middleware(hooks: AppState, cls: Any, options: dict[str, Any]) -> None:
    if not callable(cls):
        raise TypeError(f"add_middleware() needs a middleware class (cls(app, **options)): {cls!r}")
    hooks.middleware.append((cls, options))


def build(inner: ASGIApp, hooks: AppState) -> ASGIApp:
    """``inner`` (Flask's ASGI callable) with the app's mounts and middleware around it."""
    app: ASGIApp = MountRouter(inner, hooks.mounts) if hooks.mounts else inner
    for cls, options in hooks.middleware:  # the last added ends up outermost
        app = cls(app, **options)
    return app
