"""Ground floor: configuration, the greenlet/thread bridge, the background loop, the worker
pools, per-app state and the Flask 3.1/3.2 seam. Imports nothing else from flask_asgi."""
