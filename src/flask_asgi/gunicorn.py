"""flask-asgi's gunicorn worker class: ``gunicorn hello:asgi -k flask_asgi.gunicorn.Worker``.

uvicorn-worker's ``UvicornWorker`` with the shutdown of ``flask serve``: on SIGTERM every
request that reached the worker gets its whole response (docs/deployment.md). Needs the
``gunicorn`` extra (``pip install '/path/to/flask-asgi[gunicorn]'``); importing this module imports
gunicorn and uvicorn-worker, which nothing else in flask-asgi does.
"""

from __future__ import annotations

from .serving.gunicorn_worker import Worker

__all__ = ["Worker"]
