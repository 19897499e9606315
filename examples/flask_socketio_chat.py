"""An unmodified Flask-SocketIO chat app, as Flask-SocketIO's documentation writes it.

    pip install flask-socketio
    flask --app examples/flask_socketio_chat.py serve

Nothing here knows about flask-asgi: ``flask serve`` serves it on uvicorn (or
``--server granian`` / ``hypercorn``), with real WebSockets on the same port as the Flask
views, and the same code still runs under ``flask run`` (docs/socketio.md).
"""

import os

from flask import Flask, request, session
from flask_socketio import SocketIO, emit, join_room, leave_room, rooms, send

app = Flask(__name__)
app.config["SECRET_KEY"] = "dev"
# With several processes, a message queue carries emits between them (e.g. redis://...).
socketio = SocketIO(app, message_queue=os.environ.get("SOCKETIO_MESSAGE_QUEUE"))


@app.route("/")
def index():
    return {"chat": "connect a Socket.IO client to this server", "pid": os.getpid()}


@app.route("/login/<name>")
def login(name):
    session["name"] = name
    return {"name": name}


@app.route("/announce", methods=["POST"])
def announce():
    # Emitting from an ordinary (sync) view reaches every connected client.
    socketio.emit("announcement", request.get_json())
    return {"sent": True}


@app.route("/countdown", methods=["POST"])
def countdown():
    # A background task (a thread, in Flask-SocketIO's threading mode) emitting on its own.
    def count(start):
        for n in range(start, 0, -1):
            socketio.sleep(0.05)
            socketio.emit("countdown", n)

    socketio.start_background_task(count, 3)
    return {"started": True}


@socketio.on("connect")
def on_connect(auth):
    name = (auth or {}).get("name") or session.get("name") or "anonymous"
    session["name"] = name
    emit("welcome", {"sid": request.sid, "name": name})


@socketio.on("disconnect")
def on_disconnect(reason=None):
    emit("left", session.get("name"), broadcast=True)


@socketio.on("message")
def on_message(text):
    send(f"{session['name']}: {text}", broadcast=True)


@socketio.on("chat")
def on_chat(data):
    emit("chat", {"name": session["name"], "text": data["text"]}, to=data["room"])


@socketio.on("join")
def on_join(room):
    join_room(room)
    emit("joined", {"name": session["name"], "room": room}, to=room)
    return {"room": room, "rooms": sorted(rooms())}  # the client's ack


@socketio.on("leave")
def on_leave(room):
    leave_room(room)
    return {"room": room}


@socketio.on("whoami")
def on_whoami():
    return {"sid": request.sid, "name": session["name"]}


if __name__ == "__main__":
    socketio.run(app)
