"""The dashboard page, its HTML forms, and the live event stream that feeds it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user, login_required

import flask_asgi
from flask_asgi import ServerSentEvent

from . import current_user_id, notify_scheduler, publish, state, store
from .checker import channel, message
from .forms import ConfirmForm, MonitorForm

bp = Blueprint("dashboard", __name__)

CHART_POINTS = 60  # checks per chart


async def _page(form: MonitorForm) -> str:
    monitors = await store().list_monitors(current_user_id())
    recent = await store().recent_checks([m.id for m in monitors], CHART_POINTS)
    initial = [{**m.to_dict(), "checks": [c.to_dict() for c in recent[m.id]]} for m in monitors]
    return render_template(
        "dashboard.html",
        form=form,
        confirm=ConfirmForm(),
        monitors=monitors,
        initial=initial,
        chart_points=CHART_POINTS,
        user=current_user,
    )


@bp.get("/")
@login_required
async def index() -> Any:
    return await _page(MonitorForm())


@bp.post("/monitors")
@login_required
async def create_monitor() -> Any:
    form = MonitorForm()
    # The page's script submits the form with fetch() (same fields, same CSRF token) and
    # takes JSON back; without JavaScript it is a normal post and redirect.
    scripted = request.headers.get("X-Requested-With") == "fetch"
    if not form.validate_on_submit():
        if scripted:
            return jsonify(errors=form.errors), 400
        return await _page(form), 400
    monitor = await store().create_monitor(
        current_user_id(),
        form.name.data.strip(),
        form.url.data.strip(),
        form.interval.data,
        form.timeout.data,
    )
    notify_scheduler()  # checked at once, then at its interval
    await publish(channel(current_user_id()), message("monitor-added", monitor.to_dict()))
    if scripted:
        return jsonify(monitor.to_dict()), 201
    flash(f"Watching {monitor.name}.", "info")
    return redirect(url_for("dashboard.index"))


@bp.post("/monitors/<int:monitor_id>/delete")
@login_required
async def delete_monitor(monitor_id: int) -> Any:
    form = ConfirmForm()
    if not form.validate_on_submit():
        abort(400)
    if not await store().delete_monitor(current_user_id(), monitor_id):
        abort(404)
    notify_scheduler()
    await publish(channel(current_user_id()), message("monitor-deleted", {"id": monitor_id}))
    return redirect(url_for("dashboard.index"))


@bp.get("/events")
@login_required
async def events() -> Any:
    """Server-sent events for the signed-in user: checks, and monitors added or deleted.

    The scheduler and the views publish to the user's channel of ``asgi.broadcast``
    (in-process, or Redis with FLASK_ASGI_BROADCAST_URL when several processes serve).
    """
    broadcast = state().asgi.broadcast
    user_channel = channel(current_user_id())

    async def stream() -> AsyncIterator[ServerSentEvent]:
        async with broadcast.subscribe(user_channel) as subscription:
            yield ServerSentEvent(event="ready", data="{}", retry=2000)
            async for raw in subscription:
                item = json.loads(raw)
                yield ServerSentEvent(event=item["event"], data=json.dumps(item["data"]))

    return flask_asgi.event_stream(stream(), keepalive=15)
