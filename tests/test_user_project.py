"""Done-when for the user's own tests (issue 22): a separate small project, its app
unchanged ``flask[async]`` code with an ``httpx.AsyncClient`` made at import and an
``aiohttp.ClientSession`` made on first use, both talking to a local upstream, and a test
file of 3 async and 2 sync tests using both test clients. Its pytest runs in a subprocess:
all pass, with pytest-asyncio in auto mode and in strict mode under ``--flask-asgi-strict``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

FILES = {
    "upstream.py": """\
# A tiny upstream service on 127.0.0.1, in a thread.
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the app's clients pool their connections

    def do_GET(self):
        body = json.dumps({"path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def start():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"
""",
    "conftest.py": """\
import os

import upstream

os.environ["UPSTREAM_URL"] = upstream.start()
""",
    "shop.py": """\
# An unchanged flask[async] app: `flask --app shop serve` serves it.
import os

import aiohttp
import httpx
from flask import Flask

UPSTREAM = os.environ.get("UPSTREAM_URL", "http://127.0.0.1:9")

app = Flask(__name__)
http = httpx.AsyncClient(base_url=UPSTREAM)  # made at import, as users do
_session = None


def session():
    global _session
    if _session is None:  # aiohttp wants its session made inside a running loop
        _session = aiohttp.ClientSession(UPSTREAM)
    return _session


@app.get("/httpx")
async def via_httpx():
    response = await http.get("/from-httpx")
    return response.json()


@app.get("/aiohttp")
async def via_aiohttp():
    async with session().get("/from-aiohttp") as response:
        return await response.json()
""",
    "test_shop.py": """\
import pytest
from flask_asgi import ASGI

from shop import app


@pytest.fixture
def asgi():
    return ASGI.of(app)


def test_sync_httpx():
    assert app.test_client().get("/httpx").json == {"path": "/from-httpx"}


def test_sync_aiohttp():
    client = app.test_client()
    for _ in range(2):
        assert client.get("/aiohttp").json == {"path": "/from-aiohttp"}


@pytest.mark.asyncio
async def test_async_httpx(asgi):
    async with asgi.test_client() as client:
        assert (await client.get("/httpx")).json == {"path": "/from-httpx"}


@pytest.mark.asyncio
async def test_async_aiohttp(asgi):
    async with asgi.test_client() as client:
        assert (await client.get("/aiohttp")).json == {"path": "/from-aiohttp"}


@pytest.mark.asyncio
async def test_async_both_with_lifespan(asgi):
    async with asgi.test_client(lifespan=True) as client:
        assert (await client.get("/httpx")).status_code == 200
        assert (await client.get("/aiohttp")).status_code == 200
    assert app.test_client().get("/httpx").status_code == 200
""",
}

#: ``flask --app shop serve`` attaches ASGI to the app; this line does it for the tests.
PYTEST_INI = """\
[pytest]
flask_asgi_app = shop:app
"""


def run_pytest(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "pytest.ini").write_text(PYTEST_INI)
    return tmp_path


def test_user_project_passes(project: Path) -> None:
    result = run_pytest(project, "-o", "asyncio_mode=auto")
    assert "5 passed" in result.stdout, result.stdout + result.stderr
    assert result.returncode == 0


def test_user_project_passes_strict(project: Path) -> None:
    # pytest-asyncio's own strict mode too (no asyncio_mode): the async tests are marked.
    result = run_pytest(project, "--flask-asgi-strict")
    assert "5 passed" in result.stdout, result.stdout + result.stderr
    assert result.returncode == 0


def test_an_app_that_cannot_be_loaded_is_a_usage_error(project: Path) -> None:
    result = run_pytest(project, "--flask-asgi-app", "nosuch:app")
    assert result.returncode == 4  # pytest's usage error
    assert "flask_asgi_app = nosuch:app: Could not import 'nosuch'" in result.stderr


def test_the_readme_test_file_passes_strict(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start = readme.index("# test_hello.py")
    (tmp_path / "test_hello.py").write_text(readme[start : readme.index("```", start)])
    result = run_pytest(tmp_path, "-o", "asyncio_mode=auto", "--flask-asgi-strict")
    assert "3 passed" in result.stdout, result.stdout + result.stderr
