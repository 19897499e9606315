"""The one place that knows Flask 3.1 from Flask 3.2.

Most of flask-asgi goes through seams that did not change (``wsgi_app``, ``ensure_sync`` /
``async_to_sync``, ``request_context`` as a context manager, signals). The WebSocket
pipeline must call Flask's dispatch methods itself, and Flask 3.2 gives them the pushed
context as their first argument (``preprocess_request(ctx)``...), since its request
context is merged into the app context. The signature is chosen once, at import, from
``Flask.preprocess_request`` itself: whatever the version string says, the method decides.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Iterator
from typing import Any, cast

from flask import Flask, Response
from flask.globals import _cv_app

#: True on Flask 3.2 and later: dispatch methods take the pushed context first.
CONTEXT_FIRST = "ctx" in inspect.signature(Flask.preprocess_request).parameters

# ``ctx`` below is what ``app.request_context(environ)`` returned and was pushed: a
# ``RequestContext`` on Flask 3.1, an ``AppContext`` with a request on Flask 3.2.

# Called through ``Any``: the installed Flask's annotations know one signature only.
if CONTEXT_FIRST:

    def preprocess_request(app: Flask, ctx: Any) -> Any:
        return cast(Any, app).preprocess_request(ctx)

    def dispatch_request(app: Flask, ctx: Any) -> Any:
        return cast(Any, app).dispatch_request(ctx)

    def handle_user_exception(app: Flask, ctx: Any, e: Exception) -> Any:
        return cast(Any, app).handle_user_exception(ctx, e)

    def handle_exception(app: Flask, ctx: Any, e: Exception) -> Response:
        return cast(Response, cast(Any, app).handle_exception(ctx, e))

    def finalize_request(app: Flask, ctx: Any, rv: Any) -> Response:
        return cast(Response, cast(Any, app).finalize_request(ctx, rv))

    def log_exception(app: Flask, ctx: Any) -> None:
        cast(Any, app).log_exception(ctx, sys.exc_info())

else:

    def preprocess_request(app: Flask, ctx: Any) -> Any:
        return cast(Any, app).preprocess_request()

    def dispatch_request(app: Flask, ctx: Any) -> Any:
        return cast(Any, app).dispatch_request()

    def handle_user_exception(app: Flask, ctx: Any, e: Exception) -> Any:
        return cast(Any, app).handle_user_exception(e)

    def handle_exception(app: Flask, ctx: Any, e: Exception) -> Response:
        return cast(Response, cast(Any, app).handle_exception(e))

    def finalize_request(app: Flask, ctx: Any, rv: Any) -> Response:
        return cast(Response, cast(Any, app).finalize_request(rv))

    def log_exception(app: Flask, ctx: Any) -> None:
        cast(Any, app).log_exception(sys.exc_info())


def should_ignore_error(app: Flask, error: BaseException) -> bool:
    """``app.should_ignore_error(error)``; Flask 3.2 deprecates it (``None`` by default)."""
    method = getattr(app, "should_ignore_error", None)
    return bool(method is not None and method(error))


@contextlib.contextmanager
def _reactivated(ctx: Any) -> Iterator[None]:
    # Flask 3.2: the context is still pushed in the Context where the app runs (a stream
    # holds it); pushing it again from the test's thread would only count the push, and
    # leave it inactive there. Make it the active context of this Context instead; the
    # app side still owns its teardown, as Flask's own push count would decide.
    if ctx._cv_token is None:
        with ctx:
            yield
        return
    token = _cv_app.set(ctx)
    try:
        yield
    finally:
        _cv_app.reset(token)


def preserved(ctx: Any) -> Any:
    """What the test client re-pushes for a context the app preserved (``with client:``):
    the context itself on Flask 3.1, whose request context can be pushed from any thread;
    on Flask 3.2, a context manager that makes it active in the test's Context even while
    the request's Context (on another thread) still holds it."""
    return _reactivated(ctx) if CONTEXT_FIRST else ctx
