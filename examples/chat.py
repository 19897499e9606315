"""A chat room: WebSockets and asgi.broadcast on an ordinary Flask app.

    flask --app examples/chat.py serve

then open http://127.0.0.1:5000/ in two browser windows. With several processes
(``--workers 2``) or servers, set FLASK_ASGI_BROADCAST_URL=redis://127.0.0.1:6379/0 so
that every process sees every message.
"""

from __future__ import annotations

import asyncio
import json

from flask import Flask, render_template_string, request, url_for

from flask_asgi import ASGI, websocket

app = Flask(__name__)
asgi = ASGI(app)
broadcast = asgi.broadcast


async def announce(room: str, **event: str) -> None:
    await broadcast.publish(f"chat:{room}", json.dumps(event))


@asgi.websocket("/ws/<room>")
async def chat(room: str) -> None:
    name = (websocket.args.get("name") or "anonymous")[:32]
    async with broadcast.subscribe(f"chat:{room}") as subscription:
        # Subscribed before anyone hears we joined: nothing published from now on is missed.
        await websocket.accept()

        async def relay() -> None:
            async for event in subscription:
                await websocket.send(event)

        relaying = asyncio.create_task(relay())
        await announce(room, type="join", name=name)
        try:
            async for text in websocket:  # ends when the client leaves
                await announce(room, type="message", name=name, text=str(text)[:1000])
        finally:
            relaying.cancel()
            await announce(room, type="leave", name=name)


@app.get("/")
def index() -> str:
    room = request.args.get("room", "lobby")[:32]
    return render_template_string(
        PAGE, room=room, socket=url_for("chat", room=room, _external=True)
    )


PAGE = """<!doctype html>
<meta charset="utf-8">
<title>{{ room }} - flask-asgi chat</title>
<style>
  body { font: 15px system-ui, sans-serif; max-width: 40em; margin: 2em auto; }
  #log { border: 1px solid #ccc; height: 20em; overflow-y: auto; padding: .5em; }
  #log p { margin: .2em 0; } .info { color: #777; font-style: italic; }
  form { display: flex; gap: .5em; margin-top: .5em; } #text { flex: 1; }
</style>
<h1>Room: {{ room }}</h1>
<div id="log"></div>
<form id="send"><input id="text" autocomplete="off" placeholder="Say something">
<button>Send</button></form>
<script>
const log = document.getElementById("log");
const name = prompt("Your name?") || "anonymous";
const socket = new WebSocket({{ socket|tojson }} + "?name=" + encodeURIComponent(name));
function show(text, cls) {
  const p = document.createElement("p");
  p.textContent = text;
  if (cls) p.className = cls;
  log.append(p);
  log.scrollTop = log.scrollHeight;
}
socket.onmessage = (event) => {
  const e = JSON.parse(event.data);
  if (e.type === "message") show(e.name + ": " + e.text);
  else show(e.name + (e.type === "join" ? " joined" : " left"), "info");
};
socket.onclose = (event) => show("disconnected (" + event.code + ")", "info");
document.getElementById("send").onsubmit = (event) => {
  event.preventDefault();
  const input = document.getElementById("text");
  if (input.value) socket.send(input.value);
  input.value = "";
};
</script>
"""
