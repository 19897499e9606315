"""Sign in, sign up and sign out: Flask-Login and Flask-WTF, unmodified, from async views."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user
from werkzeug.security import check_password_hash, generate_password_hash

import flask_asgi

from . import store
from .forms import ConfirmForm, LoginForm, RegisterForm

bp = Blueprint("auth", __name__)


def _safe_next(target: str | None) -> str:
    # Only local paths: never redirect to another site after sign-in.
    if target and target.startswith("/") and not target.startswith("//"):
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc:
            return target
    return url_for("dashboard.index")


@bp.route("/login", methods=["GET", "POST"])
async def login() -> Any:
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.index"))
    form = LoginForm()
    if form.validate_on_submit():
        user = await store().get_user_by_email(form.email.data.strip())
        # Hashing is CPU work: run it in the worker pool, not on the event loop.
        valid = user is not None and await flask_asgi.run_sync(
            check_password_hash, user.password_hash, form.password.data
        )
        if valid:
            login_user(user, remember=form.remember.data)
            return redirect(_safe_next(request.args.get("next")))
        flash("Wrong email or password.", "error")
        return render_template("login.html", form=form), 401
    status = 400 if form.errors else 200
    return render_template("login.html", form=form), status


@bp.route("/register", methods=["GET", "POST"])
async def register() -> Any:
    form = RegisterForm()
    if form.validate_on_submit():
        email = form.email.data.strip().lower()
        if await store().get_user_by_email(email) is not None:
            form.email.errors.append("There is already an account with this email.")
        else:
            password_hash = await flask_asgi.run_sync(generate_password_hash, form.password.data)
            user = await store().create_user(email, password_hash)
            login_user(user)
            flash("Welcome! Add an endpoint to watch.", "info")
            return redirect(url_for("dashboard.index"))
    status = 400 if form.errors else 200
    return render_template("register.html", form=form), status


@bp.post("/logout")
@login_required
async def logout() -> Any:
    form = ConfirmForm()
    if form.validate_on_submit():
        logout_user()
    return redirect(url_for("auth.login"))
