"""Durable jobs with arq (a Redis job queue), enqueued from a Flask view served by flask-asgi.

``asgi.add_background_task`` runs work in the web process: it is lost if the process dies
and is cut after FLASK_ASGI_SHUTDOWN_TIMEOUT on shutdown. Work that must survive restarts,
be retried, or run on other machines goes to a job queue. Here the web app enqueues jobs
through one arq pool, created on the server loop at startup; a separate worker process
runs them. See docs/background.md.

    pip install -e ".[arq]"            # arq (and redis-py); a Redis server is needed too
    redis-server --port 6379 &
    arq examples.job_queue_arq.WorkerSettings          # the worker (from the repo root)
    flask --app examples/job_queue_arq.py serve        # the web app

    curl -X POST localhost:5000/reports/42             # -> 202, {"job_id": ..., "status_url": ...}
    curl localhost:5000/jobs/<job_id>                   # -> {"status": "complete", "result": ...}

``REDIS_URL`` (default ``redis://127.0.0.1:6379``) points both at the Redis server.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.jobs import Job, JobStatus
from flask import Flask, current_app, url_for

import flask_asgi

REDIS = RedisSettings.from_dsn(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"))


# -- the job: runs in the arq worker process ----------------------------------------------


async def build_report(ctx: dict[str, Any], report_id: int) -> dict[str, Any]:
    """A slow job (stand-in for rendering a PDF, calling a slow API...)."""
    await asyncio.sleep(0.2)
    return {"report_id": report_id, "pages": report_id % 7 + 1, "try": ctx["job_try"]}


class WorkerSettings:
    """``arq examples.job_queue_arq.WorkerSettings`` runs a worker with these settings."""

    functions = [build_report]
    redis_settings = REDIS
    max_tries = 3  # a failing job is retried; it survives worker restarts in Redis


# -- the web app: enqueues jobs and reports their status ----------------------------------

app = Flask(__name__)
asgi = flask_asgi.ASGI(app)


@asgi.before_serving
async def open_queue() -> None:
    # Created on the server loop, so every request can use it.
    app.extensions["arq"] = await create_pool(REDIS)


@asgi.after_serving
async def close_queue() -> None:
    await app.extensions.pop("arq").aclose()


def queue() -> ArqRedis:
    pool: ArqRedis = current_app.extensions["arq"]
    return pool


@app.post("/reports/<int:report_id>")
async def enqueue_report(report_id: int) -> Any:
    job = await queue().enqueue_job("build_report", report_id)
    assert job is not None  # None only when a job with the same _job_id already exists
    status_url = url_for("job_status", job_id=job.job_id)
    return {"job_id": job.job_id, "status_url": status_url}, 202, {"Location": status_url}


@app.get("/jobs/<job_id>")
async def job_status(job_id: str) -> Any:
    job = Job(job_id, queue())
    status = await job.status()
    body: dict[str, Any] = {"job_id": job_id, "status": status.value}
    if status == JobStatus.complete:
        info = await job.result_info()
        if info is not None:
            body["success"] = info.success
            body["result"] = info.result if info.success else repr(info.result)
    return body, 404 if status == JobStatus.not_found else 200


@app.get("/")
def index() -> str:
    return "POST /reports/<id> to enqueue a job; GET /jobs/<job_id> for its status.\n"
