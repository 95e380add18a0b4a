"""What a refused request is told: its status, its code, and each problem by record and column,
the values echoed bounded; and the compact JSON every answer is written in."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from pipeline.data import cells

MAX_DETAIL = 50  # field-level problems one error lists; past them validation stops
# Pydantic's words for a value of the wrong JSON type, as its JSON validation says them (the
# records are validated from parsed Python values, which it calls dictionaries and lists).
_JSON_WORDS = {
    "dict_type": "Input should be an object",
    "list_type": "Input should be a valid array",
}


def _how(kind: str, value: Any) -> str:
    """What to send instead, for a value of the wrong JSON type that `pipeline predict` reads
    from a file as it is (its cells are text): a category sent as the number 1 is "1", an
    amount sent as the string "11622" is 11622."""
    if kind == "string_type" and isinstance(value, int | float) and not isinstance(value, bool):
        # 1.0 is the category "1", as a CSV file spells it (str(1.0) is "1.0": unknown).
        text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
        return f': send it as a JSON string ("{text}"): categorical columns take text'
    numeric = kind in ("float_type", "float_parsing") and isinstance(value, str)
    if numeric and _JSON_NUMBER.fullmatch(value.strip()):  # the advice must be valid JSON
        return f": send it as a JSON number ({value.strip()}), not a string"
    return ""


_JSON_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")


class RequestError(Exception):
    """A request the server refuses: an HTTP status, a code, a message and field-level detail."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        detail: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message
        self.detail = detail or []
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON document sent back."""
        out: dict[str, Any] = {"error": self.error, "message": self.message}
        if self.detail:
            out["detail"] = self.detail
        return out


def plain(value: Any) -> Any:
    """JSON's view of one cell: NaN and missing become null, numpy scalars Python ones, a long
    text cut short (a 5 MB string in a numeric field came back whole in the 422)."""
    value = cells.plain(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str) and len(value) > _ECHOED:
        return f"{value[:_ECHOED]}... ({len(value):,} characters)"
    return value


_ECHOED = 200  # characters of a refused text value sent back in a 422


def check_ids(records: list[dict[str, Any]], id_column: str) -> None:
    """422 for an id that is a JSON object or array: an id is copied through as one value."""
    bad = [i for i, r in enumerate(records) if isinstance(r.get(id_column), dict | list)]
    if bad:
        found = [
            detail(i, id_column, "id_type", "Input should be one value: a string, number, "
                   "boolean or null")
            for i in bad[:MAX_DETAIL]
        ]  # fmt: skip
        raise RequestError(
            422, "invalid_records", f"{len(bad)} record(s) have an id that is not one value", found
        )


def misspelt(name: str, given: list[str], known: frozenset[str]) -> str:
    """For a column the model needs and the request lacks: the name given beside it that is
    most likely it misspelt (case, spaces, a letter or two), as ``" (the request has 'X': a
    misspelling?)"``; "" when none is close. Names the model knows are never suggested."""
    import difflib

    spare = [g for g in given if g not in known]
    folded = [g for g in spare if g.strip().casefold() == name.strip().casefold()]
    near = folded or difflib.get_close_matches(name, spare, n=1, cutoff=0.8)
    return f" (the request has '{near[0]}': a misspelling of '{name}'?)" if near else ""


def detail(
    record: int | None, column: str | None, kind: str, message: str, value: Any = ...
) -> dict[str, Any]:
    out: dict[str, Any] = {"record": record, "column": column, "type": kind, "message": message}
    if value is not ...:
        out["input"] = plain(value)
    return out


def json_error(
    errors: list[Any], *, complete: bool = True, known: frozenset[str] = frozenset()
) -> RequestError:
    """Pydantic's errors as field-level detail: the record's index and the column's name.
    Not ``complete``: validation stopped at the first ``MAX_DETAIL`` problems or a few more.
    ``known``: the model's columns (a missing one is matched to a misspelt key beside it)."""
    found: list[dict[str, Any]] = []
    for err in errors[:MAX_DETAIL]:
        loc = list(err["loc"])
        record = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else None
        column = str(loc[2]) if len(loc) > 2 else None
        value = err.get("input", ...)
        if not loc:
            column, message = None, 'the body must be a JSON object {"records": [...]}'
        elif loc[0] != "records":
            column, message = str(loc[0]), f"unknown key '{loc[0]}': send only \"records\""
        elif len(loc) == 1 and err["type"] == "missing":  # `{}`: "Field required", no name
            column, message = "records", 'the body needs "records": a JSON array of records'
        else:
            message = _JSON_WORDS.get(err["type"], err["msg"])
        if err["type"] == "missing" and column is not None and isinstance(value, dict):
            message += misspelt(column, [str(k) for k in value], known)
        message += _how(err["type"], value)
        if isinstance(value, float) and not math.isfinite(value):
            value = str(value).replace("inf", "Infinity").replace("nan", "NaN")  # as sent
        scalar = value is None or isinstance(value, str | int | float | bool)
        item = detail(record, column, err["type"], message, value if scalar else ...)
        if err["type"] == "missing":
            item.pop("input", None)
        found.append(item)
    count = f"{len(errors)}" if complete else f"at least {len(errors)}"
    listed = f" (the first {len(found)} listed)" if len(found) < len(errors) else ""
    return RequestError(
        422, "invalid_records", f"{count} problem(s) with the request body{listed}", found
    )


def dumps(doc: Any) -> bytes:
    """Compact JSON bytes; floats keep their shortest exact spelling."""
    return json.dumps(doc, allow_nan=False, separators=(",", ":")).encode()
