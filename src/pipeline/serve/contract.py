"""A package's input schema as the HTTP contract: validation, frames and OpenAPI from one source.

Every input column becomes a required property of a record, typed as the model was trained on
(numeric → number|null, categorical → string|null, boolean → boolean|null). One pydantic
``TypeAdapter`` both decides which request bodies are valid and writes the OpenAPI components
(``pipeline.serve.openapi``), so the request the documentation shows is exactly the request the
server accepts; msgspec decodes the common bodies first, accepting only what pydantic accepts
(``pipeline.serve.bodies``). Validated records become the columns ``pipeline predict`` reads
from a CSV file (categorical strings that the training data read as missing, such as ``NA``,
are missing here too), so both give the same numbers.
"""

from __future__ import annotations

import csv
import functools
import io
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, NotRequired

import pydantic_core
from pydantic import Field, Strict, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from pipeline.data import cells
from pipeline.data.schema import Schema
from pipeline.errors import DataError
from pipeline.serve.bodies import FastRecords, as_rows
from pipeline.serve.problems import MAX_DETAIL as MAX_DETAIL
from pipeline.serve.problems import RequestError as RequestError
from pipeline.serve.problems import check_ids as _check_ids
from pipeline.serve.problems import detail as _detail
from pipeline.serve.problems import dumps as dumps
from pipeline.serve.problems import json_error as _json_error
from pipeline.serve.problems import misspelt
from pipeline.serve.problems import plain as _plain

if TYPE_CHECKING:
    import pandas as pd


def ignored_names(names: Iterable[str]) -> tuple[list[str], int]:
    """The first ``cells.SHOWN_COLUMNS`` of ``names`` in order, each cut to
    ``cells.SHOWN_CHARS`` printable characters, and how many there are: a request cannot make
    the server write more than this about the keys it ignores."""
    names = sorted(set(names))
    shown = [cells.printable(n, cells.SHOWN_CHARS) for n in names[: cells.SHOWN_COLUMNS]]
    return shown, len(names)


_BOM = b"\xef\xbb\xbf"

# TypedDict built at run time from a schema: typed as a plain callable (checkers expect literals),
# and typing_extensions' version because pydantic needs it before Python 3.12.
_typed_dict: Any = TypedDict

_JSON_TYPES = {"numeric": float, "categorical": str, "boolean": bool}
_KIND_HELP = {
    "numeric": "numeric column: a JSON number, or null when missing",
    "categorical": "categorical column: a string, or null when missing; unseen values are allowed",
    "boolean": "boolean column: true, false, or null when missing",
}
# A cell of a CSV body that `pipeline predict` would refuse, by its column's kind: the detail's
# type and message, and what the cell's ``DataError`` says was expected.
_BAD_CELL = {
    "numeric": ("float_parsing", "Input should be a finite number", "a finite number"),
    "boolean": ("bool_parsing", "Input should be true or false", "true or false"),
}


@dataclass
class Contract:
    """Request validation and OpenAPI components for one package's schema and run settings."""

    schema: Schema
    classes: list[str]
    missing_values: frozenset[str]
    delimiter: str
    id_column: str | None
    error_column: bool
    known: frozenset[str] = field(init=False)  # the keys a record may carry that are used
    fields: tuple[str, ...] = field(init=False)  # a validated record's values, in this order
    _adapter: TypeAdapter[Any] = field(init=False, repr=False)
    _record: TypeAdapter[Any] = field(init=False, repr=False)
    _fast: FastRecords = field(init=False, repr=False)

    def __post_init__(self) -> None:
        names = [c.name for c in self.schema.columns]
        loose_id = [self.id_column] if self.id_column and self.id_column not in names else []
        self.fields = (*names, *loose_id)
        self.known = frozenset(self.fields)
        record = self._record_type()
        self._record = TypeAdapter(record)
        self._adapter = TypeAdapter(self._request_type(record))
        self._fast = FastRecords(self.kinds, self.id_column)

    # -- models -------------------------------------------------------------------------------

    def _record_type(self) -> Any:
        fields: dict[str, Any] = {}
        for column in self.schema.columns:
            kind = column.kind if column.kind in _JSON_TYPES else "categorical"
            constraint = Field(title=column.name, description=_KIND_HELP[kind])
            if kind == "numeric":
                # NaN and infinities are refused here with the record and column named.
                constraint = Field(
                    title=column.name, description=_KIND_HELP[kind], allow_inf_nan=False
                )
            fields[column.name] = Annotated[_JSON_TYPES[kind] | None, Strict(), constraint]
        if self.id_column and self.id_column not in fields:
            # The id column is copied through untouched, whatever its type; it is not required.
            fields[self.id_column] = NotRequired[
                Annotated[Any, Field(title=self.id_column, description="Copied to the output")]
            ]
        record = _typed_dict("Record", fields)
        # Keys the model does not use are accepted and reported back, as `pipeline predict`
        # ignores extra columns with a warning.
        record.__pydantic_config__ = {"extra": "allow", "title": "Record"}
        return record

    def _request_type(self, record: Any) -> Any:
        request = _typed_dict("PredictRequest", {"records": list[record]})
        request.__pydantic_config__ = {"extra": "forbid", "title": "PredictRequest"}
        return request

    def request_schema(self) -> dict[str, Any]:
        """The JSON schema of a request body, its record models under ``$defs``."""
        schema: dict[str, Any] = self._adapter.json_schema(
            ref_template="#/components/schemas/{model}"
        )
        return schema

    # -- request bodies -----------------------------------------------------------------------

    def records(self, body: bytes) -> tuple[list[tuple[Any, ...]], tuple[list[str], int]]:
        """A JSON body ``{"records": [...]}`` validated, each record as the tuple of its values
        in ``fields`` order, and the keys the model ignores (``ignored_names``)."""
        body = body.removeprefix(_BOM)  # a UTF-8 BOM, as a CSV body and predict drop it
        rows = self._fast(body)
        if rows is not None:  # msgspec accepted it: so would pydantic, and no key is ignored
            return rows, ([], 0)
        return self.validated(body)

    def validated(self, body: bytes) -> tuple[list[tuple[Any, ...]], tuple[list[str], int]]:
        """``records`` by pydantic alone: its verdict, and each problem named in the 422.

        The body is parsed once (pydantic's JSON parser), its shape checked, then each record
        validated on its own until ``MAX_DETAIL`` problems are found. Validating the whole list
        at once, pydantic lists every problem of every record: a 4 MB body of a million empty
        records made 79 million of them, and the server was killed for memory at 24 GB. The
        verdicts are pydantic's JSON ones (strict types: the same records pass)."""
        try:
            doc = pydantic_core.from_json(body.removeprefix(_BOM))
        except ValueError as exc:
            raise RequestError(
                400,
                "invalid_json",
                f"the body is not valid JSON: Invalid JSON: {exc}{_other_body(body, 'json')}",
            ) from None
        records = doc.get("records") if isinstance(doc, dict) else None
        try:  # the shape alone: its records are judged below, one at a time
            self._adapter.validate_python(
                {**doc, "records": []} if isinstance(records, list) else doc
            )
        except ValidationError as exc:
            raise _json_error(exc.errors(include_url=False, include_context=False)) from None
        records = doc["records"]  # a list: the adapter checked it
        problems: list[Any] = []
        for i, record in enumerate(records):
            try:
                records[i] = self._record.validate_python(record)
            except ValidationError as exc:
                errors = exc.errors(include_url=False, include_context=False)
                problems += [{**e, "loc": ("records", i, *e["loc"])} for e in errors]
                if len(problems) >= MAX_DETAIL and i + 1 < len(records):
                    raise _json_error(problems, complete=False, known=self.known) from None
        if problems:
            raise _json_error(problems, known=self.known)
        if self.id_column:
            _check_ids(records, self.id_column)
        ignored = ignored_names(set().union(*(r.keys() for r in records)) - self.known)
        return as_rows(records, self.fields), ignored

    def columns(self, records: list[tuple[Any, ...]]) -> dict[str, Any]:
        """Validated records as the columns `pipeline predict` reads from a file: numbers as
        float64 (NaN for missing), categorical texts with the training data's missing markers
        as None, booleans as "true"/"false" texts, and the id column's values as sent."""
        import numpy as np

        columns: dict[str, Any] = {}
        for at, column in enumerate(self.schema.columns):
            values = [r[at] for r in records]
            if column.kind == "numeric":
                columns[column.name] = np.array(values, dtype="float64")  # None → NaN
            else:
                columns[column.name] = np.array(self.texts(column.name, values), dtype=object)
        if self.id_column and self.id_column not in columns:
            columns[self.id_column] = self._raw_ids(records)
        return columns

    def texts(self, name: str, values: list[Any]) -> list[str | None]:
        """A categorical or boolean column's validated values as canonical texts: booleans as
        "true"/"false", the training data's missing markers (and null) as None."""
        if self.kinds[name] == "boolean":
            names = cells.BOOLEAN_NAMES
            return [None if v is None else names[v] for v in values]
        missing = self.missing_values
        return [None if v in missing else v for v in values]

    def id_values(self, records: list[tuple[Any, ...]]) -> Any:
        """The id column's values as ``columns`` gives them (an object array)."""
        if self.id_column in self.kinds:  # the id is also an input of the model
            return self.columns(records)[self.id_column]
        return self._raw_ids(records)

    def _raw_ids(self, records: list[tuple[Any, ...]]) -> Any:
        import numpy as np

        ids = np.empty(len(records), dtype=object)  # element-wise: never a 2-D array
        ids[:] = [r[-1] for r in records]  # a loose id is the last field
        return ids

    @functools.cached_property
    def kinds(self) -> dict[str, str]:
        """Each input column's kind (numeric, categorical, boolean)."""
        return {c.name: c.kind for c in self.schema.columns}

    def records_frame(self, body: bytes) -> tuple[pd.DataFrame, tuple[list[str], int]]:
        """A JSON body ``{"records": [...]}`` as a frame, and the keys the model ignores."""
        import pandas as pd

        records, ignored = self.records(body)
        frame = pd.DataFrame(self.columns(records), index=pd.RangeIndex(len(records)))
        return frame, ignored

    def csv_frame(
        self, body: bytes, check_numbers: bool
    ) -> tuple[pd.DataFrame, tuple[list[str], int]]:
        """A CSV body (header + rows) as a frame of text, read as `pipeline predict` reads files.

        With ``check_numbers``, a numeric cell that is not a finite number, or a boolean cell
        that is not true/false, is refused here with its record and column; otherwise it
        reaches the predictor, which reports it in the ``error`` column
        (``PIPELINE_RUN__ON_ERROR=column``).
        """
        import pandas as pd
        import pyarrow as pa
        import pyarrow.csv as pacsv

        try:
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise RequestError(
                400, "invalid_csv", f"the CSV body is not UTF-8 text{_other_body(body, 'csv')}"
            ) from None
        if "\0" in text:  # valid UTF-8 but binary (or UTF-16): no CSV cell holds NUL
            raise RequestError(400, "invalid_csv", "the CSV body holds NUL bytes: not CSV text")
        try:
            # newline="": a bare "\r" ends the line, as it does for pyarrow, instead of failing.
            lines = csv.reader(io.StringIO(text, newline=""), delimiter=self.delimiter)
            header = next(lines, [])
        except csv.Error as exc:  # e.g. a header field over the csv module's size limit
            raise RequestError(
                400, "invalid_csv", f"the CSV header cannot be parsed: {exc}"
            ) from None
        if not header or header == [""]:
            raise RequestError(400, "invalid_csv", "the CSV body is empty: send a header + rows")
        missing = [c.name for c in self.schema.columns if c.name not in header]
        if missing:
            from pipeline.data.csv_errors import delimiter_hint

            hint = delimiter_hint(header, self.delimiter)  # one column: another delimiter?
            raise RequestError(
                422,
                "missing_columns",
                f"the CSV header lacks {len(missing)} column(s) the model needs"
                + (f": {hint.removesuffix('; ')}" if hint else _other_body(body, "csv")),
                [_detail(None, name, "missing",
                         "Column required" + misspelt(name, header, self.known))
                 for name in missing[:MAX_DETAIL]],
            )  # fmt: skip
        dupes = sorted({c for c in header if c in self.known and header.count(c) > 1})
        if dupes:
            raise RequestError(
                422,
                "duplicate_columns",
                f"the CSV header has more than one column named {dupes}: give every column a "
                "unique name",
                [_detail(None, name, "duplicate", "Column named more than once") for name in dupes],
            )
        wanted = [c for c in header if c in self.known]
        # A header and no newline after it is a header without rows, as with one: pyarrow
        # cannot tell where such a first line ends ("Empty CSV file or block").
        data = text.encode() if "\n" in text or "\r" in text else (text + "\n").encode()
        try:
            # One block for the whole body (it is in memory already): pyarrow cannot parse a
            # line longer than its block, and a wide header (1 MiB by default) was refused as
            # "Empty CSV file or block: cannot infer number of columns".
            block = min(max(1 << 20, len(data) + 1), 1 << 30)
            options = cells.csv_options(
                self.delimiter, self.missing_values, text_columns=wanted, block_size=block
            )
            table = pacsv.read_csv(io.BytesIO(data), **options)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            first = str(exc).strip().splitlines()[0][:300]
            raise RequestError(
                400, "invalid_csv", f"the CSV body cannot be parsed: {first}"
            ) from None
        frame = table.to_pandas().set_axis(pd.RangeIndex(table.num_rows))
        if self.id_column and self.id_column not in frame.columns:  # optional, as in JSON
            frame[self.id_column] = None
        if check_numbers:
            self._check_cells(frame)
        return frame, ignored_names(c for c in header if c not in self.known)

    def _check_cells(self, frame: pd.DataFrame) -> None:
        """Refuse numeric cells that are not finite numbers and boolean cells not true/false.

        Numbers are judged by the predictor's rule (``cells.parse_numbers``'s ``arrow``), as
        `pipeline predict` reads a CSV file and as this server reads the same body with
        ``PIPELINE_RUN__ON_ERROR=column``: the text "NaN" is a missing value in all three (it
        was refused here alone, a 422 for a body `pipeline predict` scored).
        """
        import numpy as np

        found: list[DataError] = []
        total = 0
        for column in self.schema.columns:
            if column.kind not in _BAD_CELL:
                continue
            series = frame[column.name]
            if column.kind == "numeric":
                values, bad = cells.parse_numbers(series, "arrow")
                bad = bad | np.isinf(values)
            else:
                bad = cells.parse_booleans(series)[1]
            total += int(bad.sum())
            expected = _BAD_CELL[column.kind][2]
            errors = cells.bad_cells(series, bad, column.name, "the request", expected)
            found.extend(itertools.islice(errors, MAX_DETAIL - len(found)))
        if found:
            problems = [self.cell_detail(error, frame) for error in found]
            problems.sort(key=lambda d: (d["record"], d["column"]))
            raise RequestError(
                422, "invalid_records", f"{total} value(s) are not valid for the model", problems
            )

    def cell_detail(self, error: DataError, frame: pd.DataFrame | None = None) -> dict[str, Any]:
        """A bad cell's ``DataError`` as one item of a 422 detail, from its fields.

        The record is the error's data row less one (a request's rows are numbered from 0); the
        input is the cell as sent, looked up in ``frame`` (the request's frame) when given.
        """
        kinds = {c.name: c.kind for c in self.schema.columns}
        kind = kinds.get(error.column or "", "")
        code, message = _BAD_CELL[kind][:2] if kind in _BAD_CELL else ("value_error", error.message)
        record = None if error.row is None else error.row - 1
        value: Any = ...
        if frame is not None and record is not None and error.column in frame.columns:
            value = frame[error.column].iloc[record]
        return _detail(record, error.column, code, message, value)

    def refusal(self, error: DataError, frame: pd.DataFrame | None = None) -> RequestError:
        """The 422 for a ``DataError`` raised while predicting a request's frame: its message,
        and the cell as field-level detail when the error is about one cell."""
        detail = [self.cell_detail(error, frame)] if error.column is not None else None
        return RequestError(422, "invalid_records", error.message, detail)

    # -- responses ----------------------------------------------------------------------------

    def predictions(self, result: Mapping[str, Any] | pd.DataFrame) -> list[dict[str, Any]]:
        """Output columns (a frame, or name -> values) as JSON-ready dicts (NaN becomes null)."""
        import numpy as np

        names, columns = [], []
        for name, values in result.items():
            names.append(name)
            columns.append([_plain(v) for v in np.asarray(values, dtype=object).tolist()])
        return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


def _other_body(body: bytes, sent_as: str) -> str:
    """What the body looks like when it is not what its Content-Type says: gzip bytes, JSON
    sent as text/csv, CSV sent as application/json ("" when nothing stands out)."""
    start = body.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if body[:2] == b"\x1f\x8b":
        return (
            "; it is gzip-compressed: send it uncompressed (Content-Encoding is not "
            "accepted either)"
        )
    if sent_as == "csv" and start in (b"{", b"["):
        return "; it looks like JSON: send it with Content-Type: application/json"
    if sent_as == "json" and start not in (b"{", b"[", b"") and b"," in body.split(b"\n", 1)[0]:
        return "; it looks like CSV: send it with Content-Type: text/csv"
    return ""
