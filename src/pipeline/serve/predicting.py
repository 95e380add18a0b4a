"""POST /v1/predict on a lean ASGI path: JSON records micro-batched, CSV bodies read as files.

The route is answered here, in front of FastAPI: its routing, dependency and response layers
cost about 0.3 ms a request on 2 cores, more than a request's share of a scoring pass once
concurrent requests share passes. FastAPI keeps the route's OpenAPI description (its endpoint
calls ``predict`` too), the probes and the docs; both paths give the same answers.

A JSON body is validated on its own (pydantic-core parses and checks every record: a bad one
fails its own request with the record and column named), then its records join the queue of
the ``Batcher`` and are encoded and scored with those of the other waiting requests
(``score_records``). A CSV body goes the way of a file through `pipeline predict`'s frame path.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import operator
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

import anyio

from pipeline.data import cells
from pipeline.predict import spelling
from pipeline.serve.batching import Job, deadline_exceeded
from pipeline.serve.contract import Contract, RequestError, dumps, ignored_names

if TYPE_CHECKING:
    import numpy as np

    from pipeline.features import Encoded, Preprocessor
    from pipeline.serve.app import Loaded, ServeState

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MEDIA_TYPES = {"application/json": "json", "text/csv": "csv"}
# JSON bodies up to this size are validated on the event loop (about 20 µs per record of 80
# columns); larger ones in a worker thread, so that probes keep their answers quick.
_INLINE_BYTES = 64 * 1024


class PredictRoute:
    """Pure ASGI: answers POST /v1/predict itself and passes everything else to ``app``."""

    def __init__(self, app: Any, state: ServeState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/predict" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        extra: list[tuple[bytes, bytes]] = []
        try:
            payload, rows, ignored = await predict(self.state, dict(scope["headers"]), receive)
            status = 200
            state = scope.setdefault("state", {})
            state["rows"], state["ignored_columns"] = rows, ignored
        except RequestError as exc:
            payload, status = dumps(exc.body()), exc.status
            extra = [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            *extra,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


async def predict(
    state: ServeState, headers: Mapping[bytes, bytes], receive: Receive
) -> tuple[bytes, int, Ignored]:
    """The response body for one request to /v1/predict, with its row count and the keys the
    model ignored; a refusal is a ``RequestError``."""
    state.authorize(headers.get(b"authorization", b"").decode("latin-1"))
    loaded = state.ready()
    media = media_type(headers.get(b"content-type", b"").decode("latin-1"))
    encoding(headers.get(b"content-encoding", b"").decode("latin-1"))
    declared = headers.get(b"content-length", b"").decode("latin-1")
    limit = state.settings.max_body_bytes
    if declared.isdigit() and int(declared) > limit:
        raise _too_big(limit)
    # The body, its parsed records and their scores take memory in proportion to its size:
    # held against one budget, so that concurrent large bodies cannot exhaust it.
    size = int(declared) if declared.isdigit() else limit
    with state.reserved(size):
        body = await read_body(receive, limit, state.settings.body_timeout)
        if media == "json":
            return await _predict_records(state, loaded, body, receive)
        # A CSV body's deadline, as a JSON body's (batching): the request gets its 504 when
        # the time is up; the scoring already running finishes, and its answer is discarded.
        with anyio.move_on_after(state.settings.deadline):
            return await anyio.to_thread.run_sync(
                _predict_csv, loaded, state, body, abandon_on_cancel=True
            )
        raise deadline_exceeded(state.settings.deadline)


def _too_big(limit: int) -> RequestError:
    return RequestError(
        413,
        "body_too_large",
        f"the body is larger than {limit} bytes: send fewer records per request",
    )


def media_type(header: str) -> str:
    """``json`` or ``csv`` for a Content-Type header, else a 415."""
    kind, _, params = header.partition(";")
    kind = kind.strip().lower()
    pairs = (p.partition("=") for p in params.split(";"))
    named = [v.strip(' "').lower() for k, _, v in pairs if k.strip().lower() == "charset"]
    if named and named[0] not in ("utf-8", "utf8", "us-ascii"):  # it would be read as UTF-8
        raise RequestError(
            415,
            "unsupported_media_type",
            f"charset {cells.shown(named[0])} is not accepted: send the body as UTF-8",
        )
    if kind in MEDIA_TYPES:
        return MEDIA_TYPES[kind]
    if kind.endswith("+json"):
        return "json"
    raise RequestError(
        415,
        "unsupported_media_type",
        f"Content-Type {cells.shown(kind) if kind else repr('(none)')} is not accepted: send "
        "application/json "
        '({"records": [...]}) or text/csv (a header line and rows)',
    )


def encoding(header: str) -> None:
    """A 415 unless the body is sent as it is (no Content-Encoding, or identity): a compressed
    body read as JSON or CSV would be refused as garbled, or worse, half-understood."""
    codings = [c.strip().lower() for c in header.split(",") if c.strip()]
    if any(c != "identity" for c in codings):
        raise RequestError(
            415,
            "unsupported_content_encoding",
            f"Content-Encoding {cells.shown(header.strip())} is not accepted: send the body "
            "uncompressed",
        )


async def read_body(receive: Receive, limit: int, timeout: float) -> bytes:
    """The whole body: 413 once it exceeds ``limit`` bytes, 408 if it takes longer than
    ``timeout`` seconds to arrive (a stalled client cannot hold its connection forever)."""
    chunks: list[bytes] = []
    size = 0
    try:
        with anyio.fail_after(timeout):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise RequestError(499, "client_closed_request", "the client hung up mid-body")
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise _too_big(limit)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
    except TimeoutError:
        raise RequestError(
            408,
            "request_timeout",
            f"the body did not arrive within {timeout:g} s (PIPELINE_SERVE__BODY_TIMEOUT)",
            headers={"Connection": "close"},
        ) from None


Ignored = tuple[list[str], int]  # the names shown and how many there are (ignored_names)


Misspelt = dict[str, dict[str, str]]  # per column, value given -> the known spelling


def response(
    loaded: Loaded,
    predictions: list[dict[str, Any]],
    ignored: Ignored,
    misspelt: Misspelt | None = None,
) -> bytes:
    """The JSON document of a successful prediction request."""
    p = loaded.predictor
    doc: dict[str, Any] = {
        "predictions": predictions,
        "model": p.name,
        "version": p.version,
        "package_id": p.package_id,
        "release": loaded.release,
    }
    names, count = ignored
    if count:
        doc["ignored_columns"], doc["ignored_columns_count"] = names, count
    if misspelt:
        doc["misspelt_categories"] = misspelt
        spelling.say_served(misspelt)
    return dumps(doc)


def score_records(loaded: Loaded, jobs: list[Job]) -> list[bytes]:
    """Encode the jobs' records together, score them in one pass, answer each job.

    The encoding is ``transform``'s arithmetic on the columns `pipeline predict` would read
    (``Preprocessor.encode_values``), and scoring is batch-invariant: every record gets the
    bytes it would get alone, or from `pipeline predict`.
    """
    import numpy as np

    from pipeline import outputs

    contract, predictor, run = loaded.contract, loaded.predictor, loaded.run
    records = [r for job in jobs for r in job.records]
    encoded = loaded.encoder(records)
    values = predictor.values(encoded)
    misspelt = loaded.encoder.misspelt(records, encoded.categorical)
    every_id = contract.id_values(records) if run.id_column else None
    answers, at = [], 0
    for job in jobs:
        n = len(job.records)
        part = slice(at, at + n)
        at += n
        ids = every_id[part] if every_id is not None else None
        result = predictor.columns(values[part], run, np.zeros(n, dtype=bool), ids)
        if run.on_error == "column":
            result[outputs.ERROR] = np.full(n, "", dtype=object)
        found: Misspelt = {}
        for row in range(part.start, part.stop) if misspelt else ():
            for name, pairs in misspelt.get(row, {}).items():
                found.setdefault(name, {}).update(pairs)
        answers.append(response(loaded, contract.predictions(result), job.extra, found))
    return answers


class RecordEncoder:
    """Validated records straight into the model's input arrays, read row by row into the
    preprocessor's column order with no array per column.

    The values are those ``Contract.columns`` gives (numbers as float64 with None as NaN, the
    rest as ``Contract.texts``), and each categorical column's code comes from one dict that
    does ``Contract.texts`` and the vocabulary lookup of ``Preprocessor.encode_rows`` at once:
    one C-level ``map`` per record over the columns' dicts. The arithmetic is
    ``transform``'s, so the bytes are the same.
    """

    def __init__(self, contract: Contract, pre: Preprocessor) -> None:
        self.pre = pre
        self.width = len(pre.numeric)
        at = {name: i for i, name in enumerate(contract.fields)}
        self.numbers = _getter([at[s.name] for s in pre.numeric])
        self.texts = _getter([at[c.name] for c in pre.categorical])
        self.lookups = [
            _codes_of(contract, c.name, lookup)
            for c, lookup in zip(pre.categorical, pre.lookups, strict=True)
        ]
        self.names = [c.name for c in pre.categorical]
        # Each column's vocabulary by its case-folded, stripped spelling (``misspelt``).
        self.folded = [spelling.folded(lookup) for lookup in pre.lookups]

    def misspelt(self, records: list[tuple[Any, ...]], codes: np.ndarray) -> dict[int, Misspelt]:
        """Per record (by position), the unknown values that are a known one but for case and
        surrounding spaces (``predict.spelling``'s rule); looked for only where a code is
        unknown, so a batch of known values pays one comparison."""
        import numpy as np

        from pipeline.features.categories import UNKNOWN

        found: dict[int, Misspelt] = {}
        rows, cols = np.nonzero(codes == UNKNOWN)
        for row, col in zip(rows.tolist(), cols.tolist(), strict=True):
            value = self.texts(records[row])[col]
            if not isinstance(value, str):
                continue
            known = self.folded[col].get(spelling.key(value))
            if known is not None:
                found.setdefault(row, {}).setdefault(self.names[col], {})[value] = known
        return found

    def __call__(self, records: list[tuple[Any, ...]]) -> Encoded:
        import numpy as np

        from pipeline.features.categories import UNKNOWN

        n, lookups, unseen = len(records), self.lookups, itertools.repeat(UNKNOWN)
        raw = np.array([self.numbers(r) for r in records], dtype=np.float64)
        codes = [tuple(map(dict.get, lookups, self.texts(r), unseen)) for r in records]
        cats = np.array(codes, dtype=np.int64).reshape(n, len(lookups))
        return self.pre.encode_codes(raw.reshape(n, self.width), cats)


def _getter(positions: list[int]) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """A record's values at ``positions``, as a tuple, in order."""
    if len(positions) > 1:
        return operator.itemgetter(*positions)
    return lambda record: tuple(record[at] for at in positions)


def _codes_of(contract: Contract, name: str, lookup: dict[str, int]) -> dict[Any, int]:
    """Column ``name``'s code for each value a validated record can hold there that is not an
    unseen text: what ``Contract.texts`` makes of it, looked up in the vocabulary ``lookup``
    (None is missing). Any other value is an unseen text (the caller's default)."""
    from pipeline.features.categories import MISSING, UNKNOWN

    if contract.kinds[name] == "boolean":
        values: list[Any] = [True, False, None]
    else:
        values = [*lookup, *contract.missing_values, None]
    texts = contract.texts(name, values)
    return {
        v: MISSING if t is None else lookup.get(t, UNKNOWN)
        for v, t in zip(values, texts, strict=True)
    }


async def _predict_records(
    state: ServeState, loaded: Loaded, body: bytes, receive: Receive
) -> tuple[bytes, int, Ignored]:
    """A JSON body validated on its own (a bad record fails only its own request), then
    scored together with the records of whatever other requests are queued."""
    contract = loaded.contract
    try:
        if len(body) > _INLINE_BYTES:
            records, ignored = await anyio.to_thread.run_sync(contract.records, body)
        else:
            records, ignored = contract.records(body)
    except RequestError as exc:
        if loaded.run.on_error != "column" or not _records_refused(exc):
            raise
        # A release that reports bad rows in an error column: the records read as `pipeline
        # predict` reads JSON lines, each bad one answered with its error (the CSV path's).
        return await anyio.to_thread.run_sync(_predict_json_frame, loaded, state, body)
    if not records:
        return response(loaded, [], ignored), 0, ignored
    hung_up = False

    async def watch() -> None:  # the body was read: the next message is the disconnect
        nonlocal hung_up
        hung_up = (await receive())["type"] == "http.disconnect"

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        payload = await state.batcher.submit(records, ignored, lambda: hung_up)
    finally:
        watcher.cancel()
    return payload, len(records), ignored


def _records_refused(exc: RequestError) -> bool:
    """Whether ``exc`` refused records of a well-formed body, each problem in one record."""
    return exc.error == "invalid_records" and all(d["record"] is not None for d in exc.detail)


def _predict_json_frame(
    loaded: Loaded, state: ServeState, body: bytes
) -> tuple[bytes, int, Ignored]:
    """A JSON body whose records the strict contract refused, read as `pipeline predict` reads
    JSON lines (``jsonlines``: a key left out is a missing value, cells read as a CSV file's),
    then predicted as a CSV body is: each bad record gets its error and no prediction."""
    from pipeline.predict.jsonlines import records_frame

    records = json.loads(body)["records"]
    if not all(isinstance(r, dict) for r in records):
        raise RequestError(422, "invalid_records", "every record must be a JSON object")
    _refuse_non_finite(records)
    frame = records_frame(records, loaded.predictor, loaded.run.id_column)
    ignored = ignored_names(set().union(*(r.keys() for r in records)) - loaded.contract.known)
    return _predicted(loaded, state, frame, ignored)


def _refuse_non_finite(records: list[dict[str, Any]]) -> None:
    """A 422 naming each NaN, Infinity or 1e999 of a JSON body (Python's parser reads them,
    JSON has no such numbers), as the strict contract refuses them and `pipeline predict`
    refuses them in JSON lines: this path read NaN as a missing value and scored the row."""
    import math

    from pipeline.serve.problems import MAX_DETAIL, detail

    found = [
        detail(i, str(key), "finite_number", "Input should be a finite number", value)
        for i, record in enumerate(records)
        for key, value in record.items()
        if isinstance(value, float) and not math.isfinite(value)
    ]
    if found:
        raise RequestError(
            422,
            "invalid_records",
            f"{len(found)} value(s) are not finite numbers (NaN, Infinity, 1e999): a missing "
            "value is null",
            found[:MAX_DETAIL],
        )


def _predict_csv(loaded: Loaded, state: ServeState, body: bytes) -> tuple[bytes, int, Ignored]:
    """Parse, validate and predict one CSV body as `pipeline predict` reads a file (in a
    worker thread)."""
    contract = loaded.contract
    frame, ignored = contract.csv_frame(body, check_numbers=loaded.run.on_error == "fail")
    return _predicted(loaded, state, frame, ignored)


def _predicted(
    loaded: Loaded, state: ServeState, frame: Any, ignored: Ignored
) -> tuple[bytes, int, Ignored]:
    """``frame`` predicted, its bad rows reported as the release says; the response."""
    from pipeline.errors import DataError
    from pipeline.predict.predictor import Stats

    contract = loaded.contract
    predictions: list[dict[str, Any]] = []
    if len(frame):
        stats = Stats()
        try:
            with state.inference:
                result = loaded.predictor.predict_frame(
                    frame, loaded.run, label="the request", stats=stats
                )
        except DataError as exc:
            raise loaded.contract.refusal(exc, frame) from None
        predictions = contract.predictions(result)
        misspelt = {
            name: dict(pairs)
            for name, pairs in stats.unseen.misspelt(loaded.predictor.vocabs).items()
        }
        return response(loaded, predictions, ignored, misspelt), len(frame), ignored
    return response(loaded, predictions, ignored), len(frame), ignored
