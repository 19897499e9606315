"""examples/job_queue_arq.py end to end: redis-server, an arq worker and ``flask serve``."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import ROOT, VENV_BIN, free_port

pytest.importorskip("arq", reason="arq is not installed (pip install -e '.[arq]')")

REDIS_SERVER = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None,
    reason="redis-server is not installed (apt-get install redis-server); needed for the"
    " arq job-queue example",
)


def redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    assert REDIS_SERVER is not None
    port = free_port()
    proc = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        + ["--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not redis_ping(port):
            assert proc.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}"
    finally:
        stop(proc)


def test_job_enqueued_by_the_view_completes(
    redis_url: str, cli_server: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    worker_log = (tmp_path / "worker.log").open("w+")
    worker = subprocess.Popen(
        [str(VENV_BIN / "arq"), "examples.job_queue_arq.WorkerSettings"],
        cwd=ROOT,
        stdout=worker_log,
        stderr=subprocess.STDOUT,
    )
    try:
        server = cli_server("examples/job_queue_arq.py")
        response = httpx.post(server.base_url + "/reports/42", timeout=10)
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        assert response.headers["Location"] == response.json()["status_url"] == f"/jobs/{job_id}"

        deadline = time.monotonic() + 20
        while True:
            status = httpx.get(server.base_url + f"/jobs/{job_id}", timeout=10).json()
            if status["status"] == "complete" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        worker_log.seek(0)
        assert status == {
            "job_id": job_id,
            "status": "complete",
            "success": True,
            "result": {"report_id": 42, "pages": 1, "try": 1},
        }, worker_log.read()
        assert httpx.get(server.base_url + "/jobs/nope", timeout=10).status_code == 404
        output = server.output()  # stops the server: after_serving closes the pool
        assert "Application shutdown complete" in output and "Traceback" not in output, output
    finally:
        stop(worker)
        worker_log.close()
