# The Quart seed (quart_hello.py) written for flask-asgi: a plain Flask app, and
# `await asgi.serve()` where Quart has `app.run_task()` (same defaults: 127.0.0.1:5000).
import asyncio

from flask import Flask

from flask_asgi import ASGI

app = Flask(__name__)
asgi = ASGI(app)


@app.route("/")
async def hello_world():
    await asyncio.sleep(2)  # a simulated async operation
    return "Hello, world!"


if __name__ == "__main__":
    asyncio.run(asgi.serve("127.0.0.1", 5000))
