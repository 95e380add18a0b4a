"""msgspec's fast decoding of JSON bodies accepts only what pydantic accepts, with equal values.

`Contract.records` tries msgspec's typed decoder first and falls back to pydantic, whose
verdict and errors are the contract. These tests hold the fast path to that: on real rows and
on cells chosen at the edges of JSON and of both libraries (ints for floats, out-of-range
numbers, NaN tokens, lone surrogates, duplicate keys, booleans for numbers, extra keys, a BOM,
bytes that are not UTF-8), the fast path either refuses the body or gives exactly the records
pydantic gives, and `Contract.records` answers as pydantic's path alone would.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from tests.serve.conftest import TEST_CSV
from tests.serve.test_encode import _csv_records, _loaded

from pipeline.serve.contract import Contract, RequestError


def _slow(contract: Contract, body: bytes) -> Any:
    """What pydantic's path alone makes of ``body``: (rows, ignored keys) or the error body."""
    try:
        return contract.validated(body)
    except RequestError as exc:
        return exc.body()


def _public(contract: Contract, body: bytes) -> Any:
    try:
        return contract.records(body)
    except RequestError as exc:
        return exc.body()


def _agree(contract: Contract, body: bytes) -> bool:
    """The fast path refuses ``body`` or gives pydantic's records; `records` answers as
    pydantic's path does. Returns whether the fast path took the body."""
    slow = _slow(contract, body)
    fast = contract._fast(body)
    if fast is not None:
        assert isinstance(slow, tuple), (body[:200], slow)
        assert fast == slow[0] and slow[1] == ([], 0), body[:200]
        assert [[type(v) for v in r] for r in fast] == [[type(v) for v in r] for r in slow[0]]
    assert _public(contract, body) == slow
    return fast is not None


def _edges(record: dict[str, Any], numeric: str, text: str) -> list[bytes]:
    """Bodies that each put one edge case into ``record``."""
    base = json.dumps({"records": [record]})
    head = json.dumps({k: v for k, v in record.items() if k != numeric})[1:-1]

    def cell(column: str, raw: str) -> bytes:
        others = json.dumps({k: v for k, v in record.items() if k != column})[1:-1]
        return ('{"records": [{' + others + f', "{column}": {raw}' + "}]}").encode()

    return [
        base.encode(),
        cell(numeric, "3"),  # an int for a float
        cell(numeric, "-0"),
        cell(numeric, "1e999"),  # beyond float64
        cell(numeric, "1" + "0" * 400),
        cell(numeric, "100000000000000000000000000000000000000000"),
        cell(numeric, "2.4703282292062328e-324"),
        cell(numeric, "0.1000000000000000055511151231257827021181583404541015625"),
        cell(numeric, "NaN"),
        cell(numeric, "Infinity"),
        cell(numeric, "true"),
        cell(numeric, '"1.5"'),
        cell(numeric, "null"),
        cell(numeric, "[1]"),
        cell(text, '"\\ud800"'),  # a lone surrogate
        cell(text, '"x\\u0000y"'),
        cell(text, "1"),
        cell(text, "true"),
        cell(text, '{"a": 1}'),
        cell(text, "null"),
        cell(text, '"NA"'),  # a missing marker
        ('{"records": [{' + head + f', "{numeric}": 1.5, "{numeric}": 2.5' + "}]}").encode(),
        ('{"records": [{' + head + "}]}").encode(),  # a required key absent
        ('{"records": [{' + head + f', "{numeric}": 1, "unused": 7' + "}]}").encode(),
        (b'{"records": [], "other": 1}'),
        b'{"records": []}',
        b'{"records": {}}',
        b"[]",
        base.encode() + b" x",
        base.encode() + b" \n",
        b"\xef\xbb\xbf" + base.encode(),
        base.replace('"records"', '"r\\u00e9cords"').encode(),
        ('{"records": [{' + head + f', "{numeric}": 1' + "}]}").encode("utf-8") + b"\xe9",
    ]


@pytest.mark.slow
def test_the_fast_path_takes_real_records_and_gives_what_pydantic_gives(
    house: dict[str, Any],
) -> None:
    """All 1,459 real test rows in one body, with and without a loose id column."""
    loaded = _loaded(house)
    records = _csv_records(loaded, TEST_CSV, ("", "NA"))
    body = json.dumps({"records": records}).encode()
    assert _agree(loaded.contract, body)  # taken by msgspec, equal to pydantic's
    with_id = dataclasses.replace(loaded.contract, id_column="Id")
    ids = [{**r, "Id": i} for i, r in enumerate(records)]
    ids[3].pop("Id")  # an id may be absent
    ids[4]["Id"] = "text"
    assert _agree(with_id, json.dumps({"records": ids}).encode())
    ids[5]["Id"] = {"nested": 1}  # refused, with the record named, by pydantic's path
    assert not _agree(with_id, json.dumps({"records": ids}).encode())


@pytest.mark.slow
def test_at_the_edges_the_fast_path_refuses_or_agrees_with_pydantic(
    house: dict[str, Any], flags: dict[str, Any]
) -> None:
    """Each edge case in a numeric, a categorical and (another model) a boolean column."""
    taken = 0
    for release in (house, flags):
        loaded = _loaded(release)
        contract = loaded.contract
        kinds = contract.kinds
        numeric = next(n for n, k in kinds.items() if k == "numeric")
        text = next(n for n, k in kinds.items() if k != "numeric")
        record = {
            n: (1.0 if k == "numeric" else (True if k == "boolean" else "a"))
            for n, k in kinds.items()
        }
        for id_column in (None, "row_id"):
            shaped = dataclasses.replace(contract, id_column=id_column)
            for body in _edges(record, numeric, text):
                taken += _agree(shaped, body)
    assert taken >= 20  # most valid bodies take the fast path
