"""The run stage over HTTP: `pipeline serve` exposes one release as a JSON API.

``contract`` turns a package's input schema into the request and response models (validation and
OpenAPI from one source), ``app`` builds the ASGI application around a ``Predictor``, and
``server`` runs it under uvicorn with readiness, draining and graceful shutdown.
"""
