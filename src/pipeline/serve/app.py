"""The ASGI application: probes, model metadata, predictions, and the OpenAPI document.

The model may load after the socket is bound (``/healthz`` answers at once, ``/readyz`` turns 200
when the release is loaded and 503 again once SIGTERM arrives). Inference runs in worker threads,
at most ``concurrency`` passes at a time, so the event loop keeps answering probes under load.
POST /v1/predict is answered by ``pipeline.serve.predicting`` in front of FastAPI (which keeps its
OpenAPI description); every request passes the access log first.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hmac
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline.serve import openapi, predicting
from pipeline.serve.access import AccessLog
from pipeline.serve.batching import Batcher, Job, scoring_inline
from pipeline.serve.contract import Contract, RequestError
from pipeline.settings import RunSettings, ServeSettings

# Passes of at most this many rows are scored on the event loop's thread (``Batcher``): four
# forward blocks, about 2.5 ms of model time for house prices on one core.
INLINE_ROWS = 4 * 64

_ERROR_RESPONSES = {
    400: "Malformed body (not JSON / not CSV)",
    401: "Missing or wrong bearer token",
    413: "Body larger than PIPELINE_SERVE__MAX_BODY_BYTES",
    415: "Content-Type is neither application/json nor text/csv",
    422: "Records do not match the model's input schema (record index + column given)",
    503: "Not ready: the release is loading, or the server is shutting down; or more rows "
    "than PIPELINE_SERVE__QUEUE_ROWS wait to be scored (Retry-After)",
    408: "The body did not arrive within PIPELINE_SERVE__BODY_TIMEOUT seconds (a request line "
    "and headers slower than PIPELINE_SERVE__HEADER_TIMEOUT get a text/plain 408 instead)",
    504: "Not scored within PIPELINE_SERVE__DEADLINE seconds",
}
# Answered before routing, as text, by the server's HTTP layer (``protocol``).
_HEAD_TOO_LARGE = {
    "description": "Request line and headers larger than PIPELINE_SERVE__MAX_HEADER_BYTES",
    "content": {"text/plain": {"schema": {"type": "string"}}},
}


@dataclass
class Loaded:
    """A release ready to serve: ``pipeline predict``'s ``Ready`` and the HTTP contract of it."""

    ready: Any  # pipeline.predict.Ready (imported lazily: it brings torch and pandas)
    contract: Contract

    @functools.cached_property
    def encoder(self) -> predicting.RecordEncoder:
        """Validated records to the model's input arrays (built once, on first use)."""
        return predicting.RecordEncoder(self.contract, self.predictor.pre)

    @classmethod
    def serving(cls, ready: Any) -> Loaded:
        """Derive the HTTP contract from the predictor's schema and the bound run settings."""
        predictor, run = ready.predictor, ready.run
        contract = Contract(
            schema=predictor.schema,
            classes=[str(c) for c in predictor.pre.target.classes],
            missing_values=frozenset(predictor.missing_values),
            delimiter=predictor.delimiter,
            id_column=run.id_column,
            error_column=run.on_error == "column",
        )
        return cls(ready, contract)

    @classmethod
    def build(cls, predictor: Any, run: RunSettings, release: str | None) -> Loaded:
        """A predictor served with other run settings (``serving`` of a new ``Ready``)."""
        from pipeline.predict import Ready

        return cls.serving(Ready(predictor, run, release))

    @property
    def predictor(self) -> Any:
        """The verified predictor (``pipeline.predict.Predictor``)."""
        return self.ready.predictor

    @property
    def run(self) -> RunSettings:
        """The run settings the release binds."""
        return self.ready.run

    @property
    def release(self) -> str | None:
        """``name@vN``, or None when serving a package."""
        return self.ready.release

    def info(self) -> dict[str, Any]:
        """The document /v1/model returns."""
        return self.ready.info()


class ServeState:
    """What the routes share: the loaded release, readiness, limits and request counters."""

    def __init__(
        self,
        settings: ServeSettings,
        *,
        loaded: Loaded | None = None,
        loader: Callable[[], Loaded] | None = None,
        log: Any = None,
        peers: Callable[[], bool] | None = None,
    ) -> None:
        import os

        from pipeline import log as logging_

        self.settings = settings
        self.loaded = loaded
        self.loader = loader
        # Whether every worker process of this server has loaded (always, for one process).
        self.peers = peers or (lambda: True)
        self.log = log if log is not None else logging_.get_logger()
        self.failure: BaseException | None = None
        self.draining = False
        self.on_failure: Callable[[], None] = lambda: None
        self.on_ready: Callable[[Loaded], None] = lambda _: None
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        self.concurrency = settings.concurrency or max(1, cores or 1)
        # A thread semaphore rather than an anyio limiter: it belongs to no event loop, so the
        # same state serves uvicorn and in-process test clients alike.
        self.inference = threading.BoundedSemaphore(self.concurrency)
        self.batcher = Batcher(
            self._score,
            scorers=self.concurrency,
            max_rows=settings.batch_rows,
            max_queued_rows=settings.queue_rows,
            deadline=settings.deadline,
            inline_rows=INLINE_ROWS,
        )
        self.access_sample = settings.access_log_sample
        self.inflight = 0  # request bytes held (``reserved``)
        self.max_inflight = settings.inflight_bytes or 4 * settings.max_body_bytes
        self.started = 0
        self.completed = 0
        self._token = settings.token.get_secret_value().encode() if settings.token else None
        self._openapi: dict[str, Any] | None = None

    def _score(self, jobs: list[Job]) -> list[bytes]:
        """The response bodies of JSON requests' jobs, scored in one pass.

        A small pass runs on the event loop's thread (see ``Batcher``): it must not wait there
        for the semaphore that worker-thread inferences (CSV bodies, large passes) hold, so it
        counts as one inference beside them.
        """
        loaded = self.ready()
        if scoring_inline():
            return predicting.score_records(loaded, jobs)
        with self.inference:
            return predicting.score_records(loaded, jobs)

    @contextlib.contextmanager
    def reserved(self, size: int) -> Iterator[None]:
        """Hold ``size`` request bytes of the budget, or refuse with 503 when it is spent
        (a request larger than the whole budget is let through alone)."""
        if self.inflight and self.inflight + size > self.max_inflight:
            raise RequestError(
                503,
                "overloaded",
                f"{self.inflight} bytes of requests are being processed "
                "(PIPELINE_SERVE__INFLIGHT_BYTES): retry later",
                headers={"Retry-After": "1"},
            )
        self.inflight += size
        try:
            yield
        finally:
            self.inflight -= size

    @property
    def status(self) -> str:
        """loading, ready, draining or failed (what /readyz says)."""
        if self.failure is not None:
            return "failed"
        if self.draining:
            return "draining"
        return "ready" if self.loaded is not None and self.peers() else "loading"

    def start_loading(self) -> None:
        """Load the release in a thread, so the socket is bound and /healthz answers meanwhile."""
        if self.loaded is not None or self.loader is None:
            return
        # In a copy of this context, so the loader's events carry the run's bound fields.
        context = contextvars.copy_context()
        threading.Thread(
            target=context.run, args=(self._load,), name="serve-loader", daemon=True
        ).start()

    def _load(self) -> None:
        assert self.loader is not None
        try:
            loaded = self.loader()
        except BaseException as exc:
            self.failure = exc
            self.on_failure()
            return
        self.loaded = loaded
        self.on_ready(loaded)

    def ready(self) -> Loaded:
        """The loaded release, or 503 while it loads.

        While draining, requests that still arrive are served: /readyz alone tells load
        balancers to stop sending.
        """
        loaded = self.loaded
        if loaded is None:
            raise RequestError(503, "not_ready", f"the server is {self.status}: retry later",
                               headers={"Retry-After": "1"})  # fmt: skip
        return loaded

    def authorize(self, header: str) -> None:
        """401 unless the Authorization ``header`` carries the bearer token (when one is
        configured)."""
        if self._token is None:
            return
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), self._token
        ):
            raise RequestError(
                401,
                "unauthorized",
                "send the header 'Authorization: Bearer <token>' (PIPELINE_SERVE__TOKEN)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def openapi(self, app: FastAPI, loaded: Loaded) -> dict[str, Any]:
        """The OpenAPI document, with request and response models from the package's schema."""
        if self._openapi is None:
            from fastapi.openapi.utils import get_openapi

            p = loaded.predictor
            doc = get_openapi(
                title=f"{p.name} model",
                version=p.version,
                description=(
                    f"Predictions of `{p.schema.target}` ({p.schema.task}) by package "
                    f"{p.package_id[:12]}"
                    + (f", release {loaded.release}." if loaded.release else ".")
                ),
                routes=app.routes,
            )
            doc.setdefault("components", {}).setdefault("schemas", {}).update(
                openapi.components(loaded.contract)
            )
            if self._token is not None:
                doc["components"]["securitySchemes"] = {
                    "bearer": {"type": "http", "scheme": "bearer"}
                }
                for path, item in doc["paths"].items():
                    if path.startswith("/v1/"):
                        for operation in item.values():
                            operation["security"] = [{"bearer": []}]
            self._openapi = doc
        return self._openapi


_PREDICT_OK = {
    "description": "One prediction per record, in order",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PredictResponse"}}},
}
_PREDICT_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}},
        "text/csv": {
            "schema": {
                "type": "string",
                "description": "A header line naming the model's columns, then rows",
            }
        },
    },
}


def _error_responses() -> dict[int | str, dict[str, Any]]:
    """The OpenAPI responses of the errors every route may answer with."""
    return {
        code: {
            "description": text,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for code, text in _ERROR_RESPONSES.items()
    }


def create_app(state: ServeState) -> Any:
    """The ASGI application around ``state``: the access log, the predict route, FastAPI."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.start_loading()
        yield

    app = FastAPI(
        title="pipeline serve",
        lifespan=lifespan,
        openapi_url=None,  # served below, built from the package once it is loaded
        docs_url=None,
        redoc_url=None,
    )

    _add_error_handlers(app)

    errors = _error_responses()

    @app.get("/healthz", tags=["probes"], summary="Liveness: 200 while the process runs")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    # The probes answer HEAD too (its status, no body): load balancers' health checks often
    # send it, and got 405. Left out of the OpenAPI document, which describes GET's body.
    @app.head("/healthz", include_in_schema=False)
    async def healthz_head() -> Response:
        return Response(status_code=200)

    @app.head("/readyz", include_in_schema=False)
    async def readyz_head() -> Response:
        return Response(status_code=200 if state.status == "ready" else 503)

    @app.get(
        "/readyz",
        tags=["probes"],
        summary="Readiness: 200 once the release is loaded, 503 while loading or shutting down",
        responses={503: {"description": "Loading, draining after SIGTERM, or failed to load"}},
    )
    async def readyz() -> JSONResponse:
        loaded = state.loaded
        status = state.status
        body: dict[str, Any] = {"status": status}
        if loaded is not None:
            body["release"] = loaded.release
            body["package_id"] = loaded.predictor.package_id
        return JSONResponse(body, status_code=200 if status == "ready" else 503)

    @app.get(
        "/v1/model",
        tags=["model"],
        summary="The served model: name, version, ids, release, input schema, metrics",
        responses={k: v for k, v in errors.items() if k in (401, 503)},
    )
    async def model(request: Request) -> dict[str, Any]:
        state.authorize(request.headers.get("authorization", ""))
        return state.ready().info()

    @app.post(
        "/v1/predict",
        tags=["model"],
        summary="Predict records (JSON) or rows (CSV); one prediction per record, in order",
        responses={200: _PREDICT_OK, **errors, 431: _HEAD_TOO_LARGE},
        openapi_extra={"requestBody": _PREDICT_BODY},
    )
    async def predict(request: Request) -> Response:
        # Reached only when this FastAPI app is served without ``PredictRoute`` in front.
        payload, rows, ignored = await predicting.predict(
            state, dict(request.scope["headers"]), request.receive
        )
        request.state.rows = rows
        request.state.ignored_columns = ignored
        return Response(payload, media_type="application/json")

    _add_docs(app, state)
    return AccessLog(predicting.PredictRoute(app, state), state)


def _add_error_handlers(app: FastAPI) -> None:
    """Refusals as ``{"error", "message", ...}``: the app's own, and 404 and 405 (they were
    {"detail": "Not Found"})."""

    @app.exception_handler(RequestError)
    async def _refused(request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _routing(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            _routing_error(exc.status_code, request.method, request.url.path, exc.detail),
            status_code=exc.status_code,
            headers=exc.headers,
        )


_ROUTES = "GET /healthz, GET /readyz, GET /v1/model, POST /v1/predict, GET /docs, GET /openapi.json"


def _routing_error(status: int, method: str, path: str, detail: Any) -> dict[str, str]:
    """The body of a request no route takes: what the server does answer."""
    from pipeline.data.cells import printable

    shown = printable(path, 200)
    if status == 404:
        return {"error": "not_found", "message": f"no route {shown}: the server answers {_ROUTES}"}
    if status == 405:
        return {
            "error": "method_not_allowed",
            "message": f"{printable(method, 20)} {shown} is not allowed: the server answers "
            f"{_ROUTES}",
        }
    return {"error": "http_error", "message": printable(str(detail), 200)}


def _add_docs(app: FastAPI, state: ServeState) -> None:
    """``/openapi.json`` (built from the loaded package's schema) and ``/docs`` (its page)."""

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi() -> JSONResponse:
        loaded = state.ready()
        return JSONResponse(state.openapi(app, loaded))

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        from pipeline.serve.docs import page

        loaded = state.ready()  # the example's URL is the one this page was asked at
        return HTMLResponse(page(state.openapi(app, loaded), loaded.info(), str(request.base_url)))
