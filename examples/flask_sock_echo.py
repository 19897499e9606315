"""Flask-Sock's echo example, unmodified.

    pip install flask-sock
    flask --app examples/flask_sock_echo.py serve

flask-asgi hands Flask-Sock the connection where Werkzeug's server would
(``environ["werkzeug.socket"]``), so ``@sock.route`` handlers run as they do under
``flask run``, on any ASGI server (docs/websockets.md).
"""

from flask import Flask
from flask_sock import Sock

app = Flask(__name__)
sock = Sock(app)


@app.route("/")
def index():
    return "connect a WebSocket client to /echo"


@sock.route("/echo")
def echo(ws):
    while True:
        data = ws.receive()
        if data == "close":
            break
        ws.send(data)
