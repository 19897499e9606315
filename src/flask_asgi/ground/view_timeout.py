"""``@flask_asgi.timeout(seconds)``: a view's own request timeout, over FLASK_ASGI_REQUEST_TIMEOUT.

The decorator only marks the function (it returns the same object, so it may sit above or
below ``@app.route`` and any ``functools.wraps`` decorator such as Flask-Login's
``login_required``); ``protocol/routes.py`` reads it, once per route, for the requests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

#: The attribute the mark is stored in.
ATTRIBUTE: Final = "__flask_asgi_timeout__"


class Unset:
    """No mark: the request gets FLASK_ASGI_REQUEST_TIMEOUT."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = Unset()


def timeout(seconds: float | None) -> Callable[[F], F]:
    """Give a view (a function, a ``View`` class or one of a ``MethodView``'s methods) its own
    request timeout in seconds, or ``None`` for none at all (streams, long polls).

    Past it an async view is cancelled and answered ``504``; a sync one is logged (see
    docs/reliability.md).
    """
    if seconds is not None and (
        isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0
    ):
        raise ValueError(
            f"flask_asgi.timeout() takes a positive number of seconds, or None for no timeout;"
            f" got {seconds!r}"
        )
    value = None if seconds is None else float(seconds)

    def mark(view: F) -> F:
        if not callable(view):
            raise TypeError(f"@flask_asgi.timeout() decorates a view, not {view!r}")
        setattr(view, ATTRIBUTE, value)
        return view

    return mark


def declared_timeout(func: Any) -> float | None | Unset:
    """The mark on ``func`` or on any function it wraps (``__wrapped__``), outermost first."""
    seen = 0
    while func is not None and seen < 100:  # inspect.unwrap's own guard against cycles
        value = getattr(func, ATTRIBUTE, UNSET)
        if value is not UNSET:
            return value
        func = getattr(func, "__wrapped__", None)
        seen += 1
    return UNSET


def view_timeout(view: Any, method: str) -> float | None | Unset:
    """The mark for ``method`` requests to ``view``: a ``MethodView``'s method first, then
    its class, then the view function (``View.decorators`` apply to it)."""
    view_class = getattr(view, "view_class", None)
    if view_class is not None:
        handler = getattr(view_class, method.lower(), None)
        if handler is None and method == "HEAD":
            handler = getattr(view_class, "get", None)
        for candidate in (handler, view_class.dispatch_request):
            if candidate is not None:
                value = declared_timeout(candidate)
                if value is not UNSET:
                    return value
        value = getattr(view_class, ATTRIBUTE, UNSET)  # the class itself was decorated
        if value is not UNSET:
            return value
    return declared_timeout(view)
