"""The package's floors (tools/layers.py): imports only go down, no cycle, short modules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import ROOT

sys.path.insert(0, str(ROOT))
from tools import layers  # noqa: E402


def test_flask_asgi_has_no_cycle_no_upward_import_no_long_module() -> None:
    problems, graph = layers.check()
    assert problems == []
    # The floors exist and are used: the façade stands on every lower floor.
    facade = graph["flask_asgi.extension"]
    assert {"flask_asgi.protocol.http", "flask_asgi.features.background"} <= facade
    assert "flask_asgi.ground.bridge" in graph["flask_asgi.protocol.http"]
    done = subprocess.run(
        [sys.executable, "-m", "tools.layers"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "no cycle" in done.stdout


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    package = tmp_path / "flask_asgi"
    for name, text in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


def test_the_checker_finds_cycles_upward_imports_and_long_modules(tmp_path: Path) -> None:
    package = _package(
        tmp_path,
        {
            "__init__.py": "",
            "ground/__init__.py": "",
            "ground/a.py": "def f():\n    from ..features import b\n",  # up, inside a function
            "features/__init__.py": "",
            "features/b.py": "from ..ground import a\n",
            "features/c.py": "from . import d\n",
            "features/d.py": "from typing import TYPE_CHECKING\nfrom .c import x\n",
            "features/e.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from ..extension import A\n",  # annotations only: not counted
            "extension.py": "from .features import e\n" + "x = 1\n" * 501,
        },
    )
    problems, _ = layers.check(package)
    text = "\n".join(problems)
    assert "flask_asgi.ground.a (ground) imports flask_asgi.features.b (features)" in text
    assert "import cycle: flask_asgi.features.c -> flask_asgi.features.d" in text
    assert "import cycle: flask_asgi.features.b -> flask_asgi.ground.a" in text
    assert "extension.py: 502 lines" in text
    assert "features.e" not in text


def test_the_checker_finds_a_package_and_submodule_cycle(tmp_path: Path) -> None:
    """A package whose ``__init__`` imports a submodule (here inside a function, as a
    registry would) that takes a name from the package back is a cycle."""
    package = _package(
        tmp_path,
        {
            "__init__.py": "",
            "servers/__init__.py": "NAMES = ()\n\ndef run():\n    from .granian import go\n",
            "servers/granian.py": "from . import NAMES\n",
            "servers/options.py": "NAMES = ()\n",
            "servers/hypercorn.py": "from .options import NAMES\n",  # no cycle: a peer
        },
    )
    problems, graph = layers.check(package)
    assert problems == [
        "import cycle: flask_asgi.servers -> flask_asgi.servers.granian -> flask_asgi.servers"
    ]
    assert graph["flask_asgi.servers.hypercorn"] == {"flask_asgi.servers.options"}


def test_architecture_doc_lists_every_module_on_its_floor() -> None:
    """docs/architecture.md opens with the floors table: keep it true."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    rows = {
        line.split("|")[1].strip(): line
        for line in text.splitlines()
        if line.startswith("| ") and line.split("|")[1].strip() in layers.FLOOR_NAMES
    }
    _, graph = layers.check()
    missing = []
    for module in graph:
        parts = module.split(".")
        if len(parts) == 1 or (len(parts) == 2 and parts[1] in layers.FLOORS):
            continue  # the package itself, or a floor's package
        name = parts[-1]
        row = rows[layers.FLOOR_NAMES[layers.floor_of(module)]]
        listed = f"`{name}`" in row or f"`{name}/`" in row
        if not listed and not (len(parts) > 2 and f"`{parts[-2]}/` (" in row):
            missing.append(module)  # a subpackage's modules may be named in its parenthesis
    assert missing == []
