"""Flask's own test suite, run through flask-asgi (see conformance/run.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version

from helpers import ROOT


def test_flask_test_suite_passes_through_flask_asgi() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "conformance" / "run.py")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    print(done.stdout, done.stderr)
    assert done.returncode == 0, done.stderr
    name = f"summary-flask-{version('flask')}.json"
    summary = json.loads((ROOT / ".cache" / "conformance" / name).read_text())
    baseline = summary["passing_on_plain_flask"]
    assert baseline >= 400, "Flask's suite did not run on plain Flask"
    # Proof the requests really took the ASGI path, not Flask's WSGI one.
    assert summary["asgi_requests"] >= 400
    assert summary["passing_through_flask_asgi"] >= 0.98 * baseline
    # The same suite with every view made async (the request greenlet path): all of it.
    assert summary["differing_with_async_views"] == []
    assert summary["passing_with_async_views"] == baseline
    # Every remaining difference must be explained in docs/differences.md.
    documented = (ROOT / "docs" / "differences.md").read_text()
    undocumented = [name for name in summary["differing"] if name not in documented]
    assert not undocumented, f"differences not in docs/differences.md: {undocumented}"
