"""The benchmark app as classic sync Flask, for gunicorn's gthread worker:
``gunicorn -k gthread --threads 32 flask_sync_app:app``.

No fanout routes: a sync Flask app cannot share one async client between requests.
"""

from __future__ import annotations

import time

from common import HELLO, ROWS, SLEEP_SECONDS, TEMPLATES
from flask import Flask, render_template, request

app = Flask(__name__, template_folder=str(TEMPLATES))


@app.get("/hello")
def hello():  # type: ignore[no-untyped-def]
    return HELLO


@app.get("/sleep")
def sleep():  # type: ignore[no-untyped-def]
    time.sleep(SLEEP_SECONDS)
    return "OK"


@app.post("/echo")
def echo():  # type: ignore[no-untyped-def]
    return request.get_json()


@app.get("/template")
def template():  # type: ignore[no-untyped-def]
    return render_template("table.html", title="Table", rows=ROWS)
