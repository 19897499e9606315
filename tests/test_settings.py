"""Every FLASK_ASGI_* setting: a bad value stops startup naming its key, and never reaches a
request; a good one works as documented (issue 18).

For each declared key, six kinds of value (a wrong type, empty, negative, zero, nan, huge)
from the environment and from ``app.config``. Each case ends in one of two ways: the
``ASGI(app)`` call, the lifespan startup or the test client raises ``SettingError`` whose
message names the key, or the app starts and a sync view, an async view and a 404 answer
as they should (no 500).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

import flask_asgi
from flask_asgi.ground.settings import DEFAULTS, SETTINGS, SettingError, apply_settings

ROOT = Path(__file__).resolve().parent.parent

#: The six kinds of doubtful value, as app.config values and as environment text.
CONFIG_VALUES: dict[str, Any] = {
    "wrong type": {"a": 1},
    "empty": "",
    "negative": -1,
    "zero": 0,
    "nan": math.nan,
    "huge": 1e308,
}
ENV_VALUES = {
    "wrong type": "abc",
    "empty": "",
    "negative": "-1",
    "zero": "0",
    "nan": "nan",
    "huge": "1e308",
}


def make_app() -> Flask:
    app = Flask(__name__)
    app.config["TESTING"] = True

    @app.get("/sync")
    def sync_view() -> str:
        return "sync"

    @app.get("/async")
    async def async_view() -> str:
        return "async"

    return app


async def start_and_request(app: Flask) -> str:
    """'refused' if a SettingError naming no other key stops it, 'served' after three good
    answers; anything else fails the test."""
    try:
        asgi = flask_asgi.ASGI(app)
        async with asgi.serving(), asgi.test_client() as client:
            answers = [
                (await client.get("/sync")).status_code,
                (await client.get("/async")).status_code,
                (await client.get("/missing")).status_code,
            ]
    except SettingError as error:
        return f"refused {error.key}: {error}"
    assert answers == [200, 200, 404]
    return "served"


CASES = [(key, kind) for key in SETTINGS for kind in CONFIG_VALUES]


@pytest.mark.parametrize(("key", "kind"), CASES)
async def test_a_doubtful_value_in_app_config_stops_startup_or_works(key: str, kind: str) -> None:
    app = make_app()
    value = CONFIG_VALUES[kind]
    app.config[key] = value
    outcome = await start_and_request(app)
    if outcome.startswith("refused"):
        assert outcome.startswith(f"refused {key}: {key}="), outcome
        assert "is not valid" in outcome
    else:  # accepted: the value in effect is the parsed one, of the declared default's type
        assert type(app.config[key]) is type(DEFAULTS[key])


@pytest.mark.parametrize(("key", "kind"), CASES)
async def test_a_doubtful_value_in_the_environment_stops_startup_or_works(
    key: str, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(key, ENV_VALUES[kind])
    app = make_app()
    outcome = await start_and_request(app)
    if outcome.startswith("refused"):
        assert outcome.startswith(f"refused {key}: {key}="), outcome
        assert "(from the environment)" in outcome
    else:
        assert type(app.config[key]) is type(DEFAULTS[key])


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("FLASK_ASGI_THREADS", 0),
        ("FLASK_ASGI_THREADS", "abc"),
        ("FLASK_ASGI_BODY_TIMEOUT", math.nan),
        ("FLASK_ASGI_BODY_TIMEOUT", -1),
        ("FLASK_ASGI_HEADER_TIMEOUT", math.nan),
        ("FLASK_ASGI_SHUTDOWN_TIMEOUT", math.nan),
        ("FLASK_ASGI_DRAIN_DELAY", 1e308),
        ("FLASK_ASGI_HEALTH_PATH", "healthz"),
        ("FLASK_ASGI_WEBSOCKET_ALLOWED_ORIGINS", ["https://exa mple.com"]),
        ("FLASK_ASGI_BROADCAST_URL", "kafka://localhost"),
        ("FLASK_ASGI_MAX_REQUESTS", True),
    ],
)
def test_the_reported_bad_values_are_refused(key: str, value: Any) -> None:
    app = make_app()
    app.config[key] = value
    with pytest.raises(SettingError, match=re.escape(key)):
        flask_asgi.ASGI(app)


@pytest.mark.parametrize(
    ("key", "value", "effective"),
    [
        ("FLASK_ASGI_MAX_REQUESTS", "100", 100),
        ("FLASK_ASGI_RESPONSE_BUFFER", "5", 5),
        ("FLASK_ASGI_MAX_WAITING", " 5 ", 5),
        ("FLASK_ASGI_BODY_TIMEOUT", "2.5", 2.5),
        ("FLASK_ASGI_THREADS", 8.0, 8),
        (
            "FLASK_ASGI_WEBSOCKET_ALLOWED_ORIGINS",
            "https://a.example, *.b.example",
            ["https://a.example", "*.b.example"],
        ),
        ("FLASK_ASGI_HEALTH_PATH", " /healthz ", "/healthz"),
    ],
)
async def test_text_values_are_parsed_once_and_serve(key: str, value: Any, effective: Any) -> None:
    app = make_app()
    app.config[key] = value
    assert await start_and_request(app) == "served"
    assert app.config[key] == effective


async def test_a_bad_value_set_after_asgi_app_stops_the_lifespan_startup() -> None:
    app = make_app()
    asgi = flask_asgi.ASGI(app)
    app.config["FLASK_ASGI_MAX_WAITING"] = "many"
    with pytest.raises(Exception, match="FLASK_ASGI_MAX_WAITING"):
        async with asgi.serving():
            pass
    assert asgi.lifecycle.phase == "failed"


def test_a_bad_value_set_after_asgi_app_fails_the_test_client_not_a_request() -> None:
    app = make_app()
    flask_asgi.ASGI(app)
    app.config["FLASK_ASGI_THREADS"] = 0
    with pytest.raises(SettingError, match="FLASK_ASGI_THREADS"):
        app.test_client()


def test_a_misspelt_key_in_app_config_is_refused_with_a_hint() -> None:
    app = make_app()
    app.config["FLASK_ASGI_THREAD"] = 8
    with pytest.raises(SettingError, match="did you mean FLASK_ASGI_THREADS"):
        flask_asgi.ASGI(app)


def test_two_probes_on_one_path_are_refused() -> None:
    app = make_app()
    app.config["FLASK_ASGI_HEALTH_PATH"] = "/probe"
    app.config["FLASK_ASGI_READY_PATH"] = "/probe"
    with pytest.raises(SettingError, match="FLASK_ASGI_READY_PATH"):
        flask_asgi.ASGI(app)


def test_a_refused_value_leaves_app_config_unchanged() -> None:
    app = make_app()
    app.config["FLASK_ASGI_THREADS"] = "8"
    app.config["FLASK_ASGI_GC"] = "fast"
    with pytest.raises(SettingError):
        apply_settings(app)
    assert app.config["FLASK_ASGI_THREADS"] == "8"
    assert "FLASK_ASGI_BODY_TIMEOUT" not in app.config


def test_importing_flask_asgi_reads_no_setting() -> None:
    """A bad environment value fails ASGI(app) with its key, never ``import flask_asgi``."""
    code = "import flask_asgi; print('imported')"
    env = {"FLASK_ASGI_THREADS": "abc", "FLASK_ASGI_BODY_TIMEOUT": "", "PATH": ""}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.stdout.strip() == "imported", done.stderr


def test_flask_serve_stops_on_a_bad_environment_value_naming_the_key() -> None:
    env = {"FLASK_ASGI_THREADS": "abc", "PATH": str(Path(sys.executable).parent)}
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "examples/flask_hello.py", "serve", "--port", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "FLASK_ASGI_THREADS='abc' (from the environment) is not valid" in done.stderr
    assert "Traceback" not in done.stderr  # one clear line, as click prints a usage error


def _documented_defaults() -> dict[str, str]:
    text = (ROOT / "docs" / "configuration.md").read_text()
    rows = re.findall(r"^\| `(FLASK_ASGI_[A-Z_]+)` \| `([^`]*)`", text, re.MULTILINE)
    return dict(rows)


def test_the_configuration_table_documents_every_declared_key_and_its_default() -> None:
    documented = _documented_defaults()
    assert set(documented) == set(SETTINGS)
    for key, text in documented.items():
        assert SETTINGS[key].parse(json.loads(text)) == DEFAULTS[key], key


def test_the_accepts_table_is_the_one_the_declarations_print() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "tools.settings_table"], cwd=ROOT, capture_output=True, text=True
    )
    accepts_table = printed.stdout
    assert accepts_table.count("\n") == len(SETTINGS) + 2, printed.stderr
    assert accepts_table in (ROOT / "docs" / "configuration.md").read_text()
