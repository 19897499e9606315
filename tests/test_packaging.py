"""The wheel and sdist that `python -m build` makes install what a user's project needs.

Built offline (`--no-isolation`: setuptools, build and twine come with the test extra) into a
temporary folder, then read back: the package, its entry points and metadata, and
`twine check --strict` on both files.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from email.parser import HeaderParser
from pathlib import Path

from helpers import ROOT


def test_wheel_and_sdist_build_and_pass_twine_check(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (wheel,) = tmp_path.glob("flask_asgi-*-py3-none-any.whl")
    (sdist,) = tmp_path.glob("flask_asgi-*.tar.gz")

    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (dist_info,) = {name.split("/")[0] for name in names if ".dist-info/" in name}
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
        metadata = HeaderParser().parsestr(archive.read(f"{dist_info}/METADATA").decode())
    assert {"flask_asgi/__init__.py", "flask_asgi/cli.py", "flask_asgi/py.typed"} <= names
    assert not [name for name in names if name.startswith(("tests/", "examples/"))]
    assert "[flask.commands]\nserve = flask_asgi.cli:serve_command" in entry_points
    assert "[pytest11]\nflask_asgi = flask_asgi.pytest_plugin" in entry_points
    assert metadata["Name"] == "flask-asgi"
    assert metadata["Requires-Python"] == ">=3.11"
    classifiers = metadata.get_all("Classifier") or []
    assert "Programming Language :: Python :: 3.14" in classifiers
    assert "granian" in (metadata.get_all("Provides-Extra") or [])

    with tarfile.open(sdist) as archive:
        members = {name.split("/", 1)[-1] for name in archive.getnames()}
    assert {"pyproject.toml", "README.md", "src/flask_asgi/__init__.py"} <= members

    check = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count("PASSED") == 2, check.stdout
