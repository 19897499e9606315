"""Run Flask's own test suite twice, plain and through flask-asgi, and compare.

Usage: ``python conformance/run.py`` (the test suite calls it: tests/test_conformance.py).
Downloads Flask's sdist (it ships ``tests/``) for the installed Flask version into
``.cache/conformance`` (an unreleased Flask, such as the 3.2 snapshot in
``../shared/flask-main/``, is taken from that folder or from ``$FLASK_ASGI_FLASK_SDIST``),
runs its tests on plain Flask, then again with the
``flask_asgi_conformance`` plugin, which serves every app through flask-asgi and sends every
test-client request through the ASGI path, then a third time with every view the tests
register made ``async def`` (the async path: request greenlets and the bridge). Prints a
summary and writes it as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "conformance"


SNAPSHOTS = ROOT.parent / "shared" / "flask-main"


def unreleased_sdist(flask_version: str) -> Path | None:
    """The source archive of an unreleased Flask (not on PyPI), if this is one."""
    if ".dev" not in flask_version:
        return None
    explicit = os.environ.get("FLASK_ASGI_FLASK_SDIST")
    candidates = [Path(explicit)] if explicit else sorted(SNAPSHOTS.glob("flask-*.tar.gz"))
    stem = flask_version.removesuffix("0").rstrip(".")  # "3.2.0.dev0" -> "3.2.0.dev"
    for candidate in candidates:
        if candidate.name.startswith(f"flask-{stem}"):
            return candidate
    raise SystemExit(f"Flask {flask_version} is not on PyPI and no snapshot of it was found")


def flask_tests() -> Path:
    """The ``tests/`` folder of the installed Flask version's sdist, downloaded once."""
    flask_version = version("flask")
    snapshot = unreleased_sdist(flask_version)
    if snapshot is not None:
        with tarfile.open(snapshot) as tar:
            top = tar.getnames()[0].split("/")[0]
            folder = CACHE / top
            if not (folder / "tests").is_dir():
                CACHE.mkdir(parents=True, exist_ok=True)
                tar.extractall(CACHE, filter="data")
        return folder
    folder = CACHE / f"flask-{flask_version}"
    if (folder / "tests").is_dir():
        return folder
    CACHE.mkdir(parents=True, exist_ok=True)
    sdist = CACHE / f"flask-{flask_version}.tar.gz"
    if not sdist.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"flask=={flask_version}",
                "-d",
                str(CACHE),
            ],
            check=True,
        )
    with tarfile.open(sdist) as tar:
        tar.extractall(CACHE, filter="data")
    return folder


def run_suite(
    folder: Path, through_asgi: bool, async_views: bool = False
) -> tuple[dict[str, str], str]:
    """Run the suite; return each test's outcome and pytest's last lines."""
    kind = "async-views" if async_views else "asgi" if through_asgi else "plain"
    report = CACHE / f"{folder.name}-{kind}.xml"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "tests",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:asyncio",
        f"--junitxml={report}",
    ]
    env = dict(os.environ)
    env.pop("CONFORMANCE_ASYNC_VIEWS", None)
    if async_views:
        env["CONFORMANCE_ASYNC_VIEWS"] = "1"
    if through_asgi:
        command += ["-p", "flask_asgi_conformance"]
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(ROOT / "conformance"), env.get("PYTHONPATH")])
        )
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    outcomes: dict[str, str] = {}
    for case in ET.parse(report).iter("testcase"):
        name = f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}"
        name = name.replace("tests/", "tests/", 1)
        kinds = {child.tag for child in case}
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            if tag in kinds:
                outcome = "failed" if tag in ("failure", "error") else "skipped"
        outcomes[name] = outcome
    tail = "\n".join(done.stdout.strip().splitlines()[-3:])
    return outcomes, tail


def summary_name(flask_version: str) -> str:
    return f"summary-flask-{flask_version}.json"


def main() -> int:
    folder = flask_tests()
    plain, plain_tail = run_suite(folder, through_asgi=False)
    asgi, asgi_tail = run_suite(folder, through_asgi=True)
    async_views, async_tail = run_suite(folder, through_asgi=True, async_views=True)
    baseline = sorted(name for name, outcome in plain.items() if outcome == "passed")
    differing = [name for name in baseline if asgi.get(name) != "passed"]
    differing_async = [name for name in baseline if async_views.get(name) != "passed"]
    requests = 0
    for line in asgi_tail.splitlines():
        if line.startswith("flask-asgi:"):
            requests = int(line.split()[1])
    summary = {
        "flask": version("flask"),
        "werkzeug": version("werkzeug"),
        "passing_on_plain_flask": len(baseline),
        "passing_through_flask_asgi": len(baseline) - len(differing),
        "differing": differing,
        "passing_with_async_views": len(baseline) - len(differing_async),
        "differing_with_async_views": differing_async,
        "asgi_requests": requests,
    }
    (CACHE / summary_name(summary["flask"])).write_text(json.dumps(summary, indent=2))
    print(f"plain Flask:      {plain_tail.splitlines()[-1]}")
    print(f"through flask-asgi: {asgi_tail.splitlines()[-1]}")
    print(f"every view async: {async_tail.splitlines()[-1]}")
    print(
        f"Flask {summary['flask']} test suite through flask-asgi: "
        f"{summary['passing_through_flask_asgi']} of {summary['passing_on_plain_flask']} "
        f"tests that pass on plain Flask also pass ({requests} test-client requests went "
        "through the ASGI path)"
    )
    for name in differing:
        print(f"  differs: {name}")
    for name in differing_async:
        print(f"  differs with every view async: {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
