"""Print docs/configuration.md's "What each key accepts" table from the declarations in
``flask_asgi.ground.settings`` (``python -m tools.settings_table``); tests/test_settings.py
fails when the page and the declarations differ."""

from __future__ import annotations

from flask_asgi.ground.settings import SETTINGS


def accepts_table() -> str:
    rows = ["| key | accepts |", "|---|---|"]
    rows += [f"| `{key}` | {setting.allowed} |" for key, setting in SETTINGS.items()]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(accepts_table(), end="")
