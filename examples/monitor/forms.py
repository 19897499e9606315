"""Flask-WTF forms. The API validates its JSON with the same MonitorForm (api.py)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import current_app
from flask_wtf import FlaskForm
from wtforms import BooleanField, FloatField, IntegerField, PasswordField, StringField
from wtforms.validators import (
    URL,
    DataRequired,
    InputRequired,
    Length,
    NumberRange,
    Regexp,
    ValidationError,
)


class LoginForm(FlaskForm):
    email = StringField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired()])
    remember = BooleanField("Keep me signed in")


class RegisterForm(FlaskForm):
    email = StringField(
        "Email",
        validators=[
            DataRequired(),
            Length(max=254),
            Regexp(r"^[^@\s]+@[^@\s]+$", message="Invalid email address."),
        ],
    )
    password = PasswordField("Password", validators=[DataRequired(), Length(min=8, max=200)])


class MonitorForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=100)])
    url = StringField("URL", validators=[DataRequired(), Length(max=2000), URL(require_tld=False)])
    interval = IntegerField(
        "Every (seconds)", default=30, validators=[InputRequired(), NumberRange(max=86400)]
    )
    timeout = FloatField(
        "Timeout (seconds)", default=5.0, validators=[InputRequired(), NumberRange(0.1, 60)]
    )

    def validate_url(self, field: Any) -> None:
        if urlsplit(field.data or "").scheme not in ("http", "https"):
            raise ValidationError("Only http:// and https:// URLs can be monitored.")

    def validate_interval(self, field: Any) -> None:
        minimum = current_app.config["MONITOR_MIN_INTERVAL"]
        if field.data is not None and field.data < minimum:
            raise ValidationError(f"Number must be at least {minimum}.")

    def validate_timeout(self, field: Any) -> None:
        interval = self.interval.data
        if field.data is not None and isinstance(interval, int) and field.data > interval:
            raise ValidationError("The timeout can't be longer than the interval.")


class ConfirmForm(FlaskForm):
    """A form with only the CSRF token (delete buttons, sign out)."""
