"""Server-sent events: a live clock and a job progress feed, with a page using EventSource.

    flask --app examples/clock_sse.py serve        # then open http://127.0.0.1:5000/

* ``GET /clock``: one ``tick`` event per second. Each event has an ``id``; a browser that
  reconnects sends it back as ``Last-Event-ID`` and the count resumes from there.
* ``POST /jobs``: starts a background task (``asgi.add_background_task``) that works
  through ``steps`` steps; ``GET /jobs/<id>/progress`` streams its progress as ``progress``
  events and ends with a ``done`` event.

No JavaScript library or CDN: the page below uses the browser's own ``EventSource``.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

from flask import Flask, abort, request

import flask_asgi
from flask_asgi import ServerSentEvent

app = Flask(__name__)
asgi = flask_asgi.ASGI(app)

#: Job id -> percentage done. The jobs and the streams all run on the server loop.
PROGRESS: dict[int, int] = {}
_job_ids = itertools.count(1)

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>flask-asgi server-sent events</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 3rem auto; max-width: 36rem; }
  #clock { font-size: 3rem; font-variant-numeric: tabular-nums; }
  progress { width: 100%; height: 1.5rem; }
  .muted { color: #777; }
</style>
</head>
<body>
<h1>Server-sent events</h1>
<p id="clock">--:--:--</p>
<p class="muted">tick <span id="tick">0</span>, connection: <span id="state">connecting</span></p>

<h2>A background job</h2>
<button id="start">Start a job</button>
<progress id="bar" max="100" value="0"></progress>
<p id="status" class="muted">idle</p>

<script>
const clock = new EventSource("/clock");
clock.addEventListener("tick", (e) => {
  const data = JSON.parse(e.data);
  document.getElementById("clock").textContent = data.time;
  document.getElementById("tick").textContent = e.lastEventId;
});
clock.onopen = () => { document.getElementById("state").textContent = "open"; };
clock.onerror = () => { document.getElementById("state").textContent = "reconnecting"; };

document.getElementById("start").onclick = async () => {
  const response = await fetch("/jobs?steps=20", { method: "POST" });
  const job = await response.json();
  const status = document.getElementById("status");
  status.textContent = "job " + job.id + " started";
  const feed = new EventSource(job.progress_url);
  feed.addEventListener("progress", (e) => {
    document.getElementById("bar").value = Number(e.data);
    status.textContent = "job " + job.id + ": " + e.data + "%";
  });
  feed.addEventListener("done", () => {
    status.textContent = "job " + job.id + " done";
    feed.close();  // otherwise the browser reconnects when the stream ends
  });
};
</script>
</body>
</html>
"""


@app.get("/")
def index() -> str:
    return PAGE


@app.get("/clock")
async def clock() -> Any:
    tick = int(flask_asgi.last_event_id() or 0)  # resume after a reconnection
    interval = float(request.args.get("interval", 1.0))

    async def ticks() -> AsyncIterator[ServerSentEvent]:
        nonlocal tick
        # A long reconnection delay for browsers (ms): the clock is not urgent.
        yield ServerSentEvent(retry=3000, comment="clock")
        while True:
            tick += 1
            now = time.strftime("%H:%M:%S")
            yield ServerSentEvent(data={"time": now}, event="tick", id=tick)
            await asyncio.sleep(interval)

    return flask_asgi.event_stream(ticks())


async def run_job(job_id: int, steps: int) -> None:
    for step in range(1, steps + 1):
        await asyncio.sleep(0.1)  # stand-in for real work
        PROGRESS[job_id] = step * 100 // steps


@app.post("/jobs")
def start_job() -> Any:
    job_id = next(_job_ids)
    steps = max(1, min(int(request.args.get("steps", 20)), 1000))
    PROGRESS[job_id] = 0
    asgi.add_background_task(run_job, job_id, steps)  # starts once this response is sent
    return {"id": job_id, "progress_url": f"/jobs/{job_id}/progress"}, 202


@app.get("/jobs/<int:job_id>/progress")
async def job_progress(job_id: int) -> Any:
    if job_id not in PROGRESS:
        abort(404)

    async def progress() -> AsyncIterator[ServerSentEvent]:
        sent = -1
        while True:
            done = PROGRESS[job_id]
            if done != sent:
                sent = done
                yield ServerSentEvent(data=done, event="progress")
            if done >= 100:
                yield ServerSentEvent(data="ok", event="done")
                return
            await asyncio.sleep(0.05)

    return flask_asgi.event_stream(progress(), keepalive=10)
