"""Protocol floor: ASGI scopes and messages to Flask and back (environ, body, HTTP,
WebSocket, lifespan). Stands on the ground floor only."""
