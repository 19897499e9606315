"""FLASK_ASGI_GC: the collector is tuned once the app is loaded, in a real serving process."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask

import flask_asgi
from flask_asgi.ground.gc_tuning import AUTO_THRESHOLDS, parse_gc_setting

#: A fresh interpreter's thresholds (this test process may itself be tuned by now).
FRESH = [
    int(n)
    for n in subprocess.check_output(
        [sys.executable, "-c", "import gc; print(*gc.get_threshold())"], text=True
    ).split()
]

APP = """
import gc
from flask import Flask
import flask_asgi

app = Flask(__name__)
asgi = flask_asgi.ASGI(app)

@app.get("/gc")
def gc_state():
    return {"threshold": list(gc.get_threshold()), "frozen": gc.get_freeze_count()}
"""


@pytest.mark.parametrize(
    ("value", "expected"),
    [("auto", AUTO_THRESHOLDS), ("AUTO", AUTO_THRESHOLDS), ("off", None), ("", None),
     ("60000", (60000,)), ("60000,20", (60000, 20)), (" 1000, 5, 5 ", (1000, 5, 5))],
)  # fmt: skip
def test_settings(value: str, expected: Any) -> None:
    assert parse_gc_setting(value) == expected


@pytest.mark.parametrize("value", ["fast", "1,2,3,4", "0,10,10", "-5", "50000,x"])
def test_bad_setting_is_refused_at_init_app(value: str) -> None:
    app = Flask(__name__)
    app.config["FLASK_ASGI_GC"] = value
    with pytest.raises(ValueError, match="FLASK_ASGI_GC=.* 'auto', 'off', or 1 to 3"):
        flask_asgi.ASGI(app)


@pytest.mark.parametrize(
    ("setting", "threshold", "frozen"),
    [(None, list(AUTO_THRESHOLDS), True),
     ("off", FRESH, False),
     ("12345,7,8", [12345, 7, 8], True)],
)  # fmt: skip
def test_serving_process_is_tuned(
    setting: str | None,
    threshold: list[int],
    frozen: bool,
    tmp_path: Path,
    cli_server: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "gc_app.py").write_text(APP)
    if setting is None:
        monkeypatch.delenv("FLASK_ASGI_GC", raising=False)
    else:
        monkeypatch.setenv("FLASK_ASGI_GC", setting)
    server = cli_server("gc_app.py", cwd=tmp_path, extra=["--log-level", "warning"])
    state = httpx.get(server.base_url + "/gc", timeout=30).json()
    assert state["threshold"] == threshold
    assert (state["frozen"] > 1000) is frozen  # the app, Flask, the server: all frozen


async def test_testing_app_leaves_the_collector_alone() -> None:
    app = Flask(__name__)
    app.config["TESTING"] = True
    asgi = flask_asgi.ASGI(app)
    before = (gc.get_threshold(), gc.get_freeze_count())
    async with asgi.serving():
        assert (gc.get_threshold(), gc.get_freeze_count()) == before
