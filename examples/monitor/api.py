"""The JSON API under /api/.

Authentication is the session cookie: sign in with ``POST /api/login`` (or the HTML
form). Every error is JSON: 400 with field errors, 401 when not signed in (never a redirect),
404 for unknown ids (and other users' monitors), 415 for a body that isn't JSON.

CSRF: the API is exempt from Flask-WTF's token check. It only accepts JSON bodies
(``Content-Type: application/json``, else 415), which a cross-site HTML form cannot send
and a cross-site ``fetch`` can only send after a CORS preflight that this app never
grants; DELETE likewise needs a preflight. The session cookie is also ``SameSite=Lax``.
The HTML forms (auth.py, dashboard.py) keep the token check.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request, url_for
from flask_login import current_user, login_user, logout_user
from werkzeug.datastructures import MultiDict
from werkzeug.security import check_password_hash

import flask_asgi

from . import current_user_id, notify_scheduler, publish, store
from .checker import channel, message
from .forms import MonitorForm

bp = Blueprint("api", __name__, url_prefix="/api")

MAX_PER_PAGE = 500
PUBLIC = {"api.login"}


def error(status: int, message_: str, fields: dict[str, list[str]] | None = None) -> Any:
    body: dict[str, Any] = {"error": message_}
    if fields:
        body["fields"] = fields
    return jsonify(body), status


@bp.before_request
def require_login() -> Any:
    if request.endpoint not in PUBLIC and not current_user.is_authenticated:
        return error(401, "Sign in first: POST /api/login with your email and password.")
    return None


def json_body() -> tuple[dict[str, Any] | None, Any]:
    if not request.is_json:
        return None, error(415, "Send a JSON object with Content-Type: application/json.")
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        return None, error(400, "The body must be a JSON object.")
    return data, None


@bp.post("/login")
async def login() -> Any:
    data, failure = json_body()
    if data is None:
        return failure
    fields = {
        name: ["This field is required."]
        for name in ("email", "password")
        if not isinstance(data.get(name), str) or not data[name]
    }
    if fields:
        return error(400, "Invalid input.", fields)
    user = await store().get_user_by_email(data["email"].strip())
    valid = user is not None and await flask_asgi.run_sync(
        check_password_hash, user.password_hash, data["password"]
    )
    if not valid:
        return error(401, "Wrong email or password.")
    login_user(user)
    return {"id": user.id, "email": user.email}


@bp.post("/logout")
async def logout() -> Any:
    logout_user()
    return "", 204


@bp.get("/monitors")
async def list_monitors() -> Any:
    monitors = await store().list_monitors(current_user_id())
    return {"monitors": [m.to_dict() for m in monitors]}


@bp.post("/monitors")
async def create_monitor() -> Any:
    data, failure = json_body()
    if data is None:
        return failure
    # Validate with the HTML form's rules: WTForms takes strings, as a form post would.
    fields: dict[str, list[str]] = {}
    formdata = MultiDict()
    for name in ("name", "url", "interval", "timeout"):
        value = data.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            fields[name] = ["Must be a string or a number."]
        else:
            formdata[name] = str(value)
    unknown = sorted(set(data) - {"name", "url", "interval", "timeout"})
    for name in unknown:
        fields[name] = ["Unknown field."]
    formdata.setdefault("interval", "30")
    formdata.setdefault("timeout", "5")
    form = MonitorForm(formdata=formdata, meta={"csrf": False})
    if not form.validate():
        for name, messages in form.errors.items():
            fields.setdefault(str(name), list(messages))
    if fields:
        return error(400, "Invalid input.", fields)
    monitor = await store().create_monitor(
        current_user_id(),
        form.name.data.strip(),
        form.url.data.strip(),
        form.interval.data,
        form.timeout.data,
    )
    notify_scheduler()
    await publish(channel(current_user_id()), message("monitor-added", monitor.to_dict()))
    location = url_for("api.get_monitor", monitor_id=monitor.id)
    return monitor.to_dict(), 201, {"Location": location}


async def _owned(monitor_id: int) -> Any:
    return await store().get_monitor(current_user_id(), monitor_id)


@bp.get("/monitors/<int:monitor_id>")
async def get_monitor(monitor_id: int) -> Any:
    monitor = await _owned(monitor_id)
    if monitor is None:
        return error(404, f"No monitor {monitor_id}.")
    return monitor.to_dict()


@bp.delete("/monitors/<int:monitor_id>")
async def delete_monitor(monitor_id: int) -> Any:
    if not await store().delete_monitor(current_user_id(), monitor_id):
        return error(404, f"No monitor {monitor_id}.")
    notify_scheduler()
    await publish(channel(current_user_id()), message("monitor-deleted", {"id": monitor_id}))
    return "", 204


def _positive_int(name: str, default: int, maximum: int | None = None) -> tuple[int, str | None]:
    raw = request.args.get(name)
    if raw is None:
        return default, None
    try:
        value = int(raw)
    except ValueError:
        return default, "Must be an integer."
    if value < 1:
        return default, "Must be at least 1."
    if maximum is not None and value > maximum:
        return default, f"Must be at most {maximum}."
    return value, None


@bp.get("/monitors/<int:monitor_id>/checks")
async def list_checks(monitor_id: int) -> Any:
    """Check history, newest first: ``?page=1&per_page=50``."""
    page, page_error = _positive_int("page", 1)
    per_page, per_page_error = _positive_int("per_page", 50, MAX_PER_PAGE)
    fields = {k: [v] for k, v in (("page", page_error), ("per_page", per_page_error)) if v}
    if fields:
        return error(400, "Invalid query.", fields)
    if await _owned(monitor_id) is None:
        return error(404, f"No monitor {monitor_id}.")
    result = await store().list_checks(monitor_id, page, per_page)

    def link(number: int) -> str:
        return url_for("api.list_checks", monitor_id=monitor_id, page=number, per_page=per_page)

    return {
        "checks": [c.to_dict() for c in result.items],
        "page": result.page,
        "per_page": result.per_page,
        "total": result.total,
        "pages": result.pages,
        "next": link(page + 1) if page < result.pages else None,
        "prev": link(page - 1) if page > 1 else None,
    }
