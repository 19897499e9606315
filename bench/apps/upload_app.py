"""The app of bench/upload.py: the same upload to a sync and to an async view."""

from flask import Flask, request

from flask_asgi import ASGI

app = Flask(__name__)
asgi = ASGI(app)


@app.post("/sync")
def sync_upload() -> str:
    return str(len(request.get_data()))


@app.post("/async")
async def async_upload() -> str:
    return str(len(request.get_data()))
