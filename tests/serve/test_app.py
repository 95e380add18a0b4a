"""The serve app in process: the OpenAPI contract, validation errors, limits and readiness."""

from __future__ import annotations

import csv
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from structlog.testing import capture_logs
from tests.serve.conftest import TEST_CSV, invoked

from pipeline.data import cells
from pipeline.errors import DataError
from pipeline.serve.app import Loaded, ServeState, create_app
from pipeline.serve.server import load_release
from pipeline.settings import RunSettings, ServeSettings, load


def _loaded(release: dict[str, Any], **run: Any) -> Loaded:
    """The release's package loaded as the server loads it (run settings optionally replaced)."""
    settings = load(release["env"]).settings
    loaded = load_release(settings, None, release["package"])
    if run:
        return Loaded.build(loaded.predictor, RunSettings(**run), None)
    return loaded


@pytest.fixture(scope="module")
def house_loaded(house: dict[str, Any]) -> Loaded:
    """house-prices, with the Id column copied through."""
    return _loaded(house, id_column="Id")


def _client(loaded: Loaded | None, **settings: Any) -> TestClient:
    state = ServeState(ServeSettings(**settings), loaded=loaded)
    return TestClient(create_app(state))


@pytest.fixture
def client(house_loaded: Loaded) -> Iterator[TestClient]:
    """A client of the house-prices app with default settings."""
    with _client(house_loaded) as c:
        yield c


def _rows(n: int) -> list[dict[str, str]]:
    with TEST_CSV.open(newline="") as fh:
        return [row for _, row in zip(range(n), csv.DictReader(fh), strict=False)]


def _record(loaded: Loaded, row: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column in loaded.predictor.schema.columns:
        value = row[column.name]
        if column.kind == "numeric":
            out[column.name] = None if value in ("", "NA") else float(value)
        else:
            out[column.name] = value
    return out


def _records(loaded: Loaded, n: int) -> list[dict[str, Any]]:
    return [_record(loaded, row) for row in _rows(n)]


def test_openapi_request_model_is_the_package_input_schema(
    client: TestClient, house_loaded: Loaded
) -> None:
    """Each input column is one required record property typed as it was trained."""
    doc = client.get("/openapi.json").json()
    assert doc["info"]["title"] == "house-prices model" and doc["info"]["version"] == "0.1.0"
    schemas = doc["components"]["schemas"]
    record = schemas["Record"]
    columns = house_loaded.predictor.schema.columns
    assert record["required"] == [c.name for c in columns]
    types = {"numeric": "number", "categorical": "string", "boolean": "boolean"}
    for column in columns:
        prop = record["properties"][column.name]
        assert prop["anyOf"] == [{"type": types[column.kind]}, {"type": "null"}], column
    assert "Id" in record["properties"] and "Id" not in record["required"]
    request = schemas["PredictRequest"]
    assert request["properties"]["records"]["items"] == {"$ref": "#/components/schemas/Record"}
    body = doc["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"] == {"$ref": "#/components/schemas/PredictRequest"}
    assert "text/csv" in body
    ok = doc["paths"]["/v1/predict"]["post"]["responses"]["200"]["content"]["application/json"]
    assert ok["schema"] == {"$ref": "#/components/schemas/PredictResponse"}
    assert set(schemas["Prediction"]["properties"]) == {"Id", "prediction"}
    assert {"/healthz", "/readyz", "/v1/model", "/v1/predict"} <= set(doc["paths"])
    # Every status the route answers with, the README's included (408, 431 and 504 were not).
    statuses = set(doc["paths"]["/v1/predict"]["post"]["responses"])
    assert {"200", "400", "401", "408", "413", "415", "422", "431", "503", "504"} <= statuses


def test_openapi_types_boolean_columns_and_serves_them_as_predict_does(
    flags: dict[str, Any],
) -> None:
    """A boolean column is boolean|null in the document; true/false/null predict like the CSV."""
    loaded = _loaded(flags)
    kinds = {c.name: c.kind for c in loaded.predictor.schema.columns}
    assert kinds == {"member": "boolean", "age": "numeric", "city": "categorical"}
    rows = flags["root"] / "rows.csv"
    rows.write_text("member,age,city\ntrue,30,north\nfalse,41,east\n,25,south\ntrue,60,west\n")
    out = flags["root"] / "rows-out.csv"
    invoked("predict", str(rows), "--package", str(flags["package"]), "-o", str(out),
            root=flags["root"], env=flags["env"])  # fmt: skip
    expected = [float(r["prediction"]) for r in csv.DictReader(out.open())]
    with _client(loaded) as client:
        record = client.get("/openapi.json").json()["components"]["schemas"]["Record"]
        assert record["properties"]["member"]["anyOf"] == [{"type": "boolean"}, {"type": "null"}]
        records = [
            {"member": True, "age": 30, "city": "north"},
            {"member": False, "age": 41, "city": "east"},
            {"member": None, "age": 25, "city": "south"},
            {"member": True, "age": 60, "city": "west"},
        ]
        got = client.post("/v1/predict", json={"records": records}).json()
        assert [p["prediction"] for p in got["predictions"]] == expected
        refused = client.post("/v1/predict", json={"records": [{**records[0], "member": "yes"}]})
        assert refused.status_code == 422
        assert refused.json()["detail"][0]["column"] == "member"


def test_bad_types_name_the_record_and_the_column(client: TestClient, house_loaded: Loaded) -> None:
    """Text in a numeric column, a number in a categorical one, NaN: 422 with each field named."""
    records = _records(house_loaded, 3)
    records[1]["LotArea"] = "big"
    records[2]["MSZoning"] = 5
    records[2]["GrLivArea"] = float("nan")
    response = client.post(
        "/v1/predict",
        content=json.dumps({"records": records}),  # json.dumps writes NaN, as some clients do
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_records" and body["message"].startswith("3 problem(s)")
    found = {(d["record"], d["column"], d["type"]) for d in body["detail"]}
    assert found == {
        (1, "LotArea", "float_type"),
        (2, "MSZoning", "string_type"),
        (2, "GrLivArea", "finite_number"),
    }
    lot = next(d for d in body["detail"] if d["column"] == "LotArea")
    assert lot["input"] == "big" and lot["message"] == "Input should be a valid number"
    # The NaN is echoed as sent, not as null (which reads as a missing value, and is allowed).
    area = next(d for d in body["detail"] if d["column"] == "GrLivArea")
    assert area["input"] == "NaN", area


def test_a_value_of_the_other_json_type_is_told_how_to_send_it(
    client: TestClient, house_loaded: Loaded
) -> None:
    """A category sent as a number (5) and an amount as a string ("11622"), which `pipeline
    predict` reads from a JSON-lines file as they are, got only "Input should be a valid
    string": the 422 says what to send."""
    records = _records(house_loaded, 4)
    records[0]["MSZoning"] = 5
    records[1]["LotArea"] = " 11622"
    records[2]["Street"] = 60.0  # the text "60" (as a CSV file spells it), not "60.0"
    records[3]["LotArea"] = "1_000"  # no JSON number: no advice to send it as one
    response = client.post("/v1/predict", json={"records": records})
    assert response.status_code == 422
    said = {(d["record"], d["column"]): d["message"] for d in response.json()["detail"]}
    assert said == {
        (0, "MSZoning"): 'Input should be a valid string: send it as a JSON string ("5"): '
        "categorical columns take text",
        (1, "LotArea"): "Input should be a valid number: send it as a JSON number (11622), not "
        "a string",
        (2, "Street"): 'Input should be a valid string: send it as a JSON string ("60"): '
        "categorical columns take text",
        (3, "LotArea"): "Input should be a valid number",
    }, said


def test_missing_columns_are_named_per_record(client: TestClient, house_loaded: Loaded) -> None:
    """A record without a model column is refused, naming the record and the column."""
    records = _records(house_loaded, 2)
    del records[1]["LotArea"]
    del records[1]["Street"]
    response = client.post("/v1/predict", json={"records": records})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert [(d["record"], d["column"], d["type"]) for d in detail] == [
        (1, "LotArea", "missing"),
        (1, "Street", "missing"),
    ]
    assert [d["message"] for d in detail] == ["Field required"] * 2


def test_a_missing_column_beside_a_misspelt_key_names_the_key(
    client: TestClient, house_loaded: Loaded
) -> None:
    """`LotAre` for `LotArea`, `street` for `Street`: the 422 said "Field required" and the
    misspelt key, which the server ignores, went unnamed. A key the model uses is never the
    suggestion (BsmtFinSF1 is not BsmtFinSF2 misspelt). The same for a CSV header."""
    records = _records(house_loaded, 1)
    records[0]["LotAre"] = records[0].pop("LotArea")
    records[0]["street"] = records[0].pop("Street")
    del records[0]["BsmtFinSF2"]
    detail = client.post("/v1/predict", json={"records": records}).json()["detail"]
    said = {d["column"]: d["message"] for d in detail}
    assert said == {
        "LotArea": "Field required (the request has 'LotAre': a misspelling of 'LotArea'?)",
        "Street": "Field required (the request has 'street': a misspelling of 'Street'?)",
        "BsmtFinSF2": "Field required",
    }, said
    header = ",".join(records[0])
    csv_body = f"{header}\n" + ",".join("" if v is None else str(v) for v in records[0].values())
    response = client.post("/v1/predict", content=csv_body, headers={"Content-Type": "text/csv"})
    said = {d["column"]: d["message"] for d in response.json()["detail"]}
    assert said["LotArea"].endswith("(the request has 'LotAre': a misspelling of 'LotArea'?)")
    empty = client.post("/v1/predict", json={}).json()["detail"]
    assert empty == [{"record": None, "column": "records", "type": "missing",
                      "message": 'the body needs "records": a JSON array of records'}]  # fmt: skip


def test_malformed_bodies_are_4xx_never_500(client: TestClient) -> None:
    """Broken JSON (or a string in it that is not UTF-8) is 400; the wrong shape is 422; an
    unknown media type, or a compressed body, is 415."""
    cases = [
        (b"{not json", "application/json", 400, "invalid_json"),
        # Not UTF-8 inside a string: msgspec raises UnicodeDecodeError, not its DecodeError.
        (b'{"records": [{"MSZoning": "\xff\xfe"}]}', "application/json", 400, "invalid_json"),
        (b'{"records": [{"\xff": "RL"}]}', "application/json", 400, "invalid_json"),
        (b"[1, 2]", "application/json", 422, "invalid_records"),
        (b'{"records": 5}', "application/json", 422, "invalid_records"),
        (b'{"records": [], "extra": 1}', "application/json", 422, "invalid_records"),
        (b'{"records": [7]}', "application/json", 422, "invalid_records"),
        (b"a=1", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        (b"", "text/csv", 400, "invalid_csv"),
        (b"\xff\xfe", "text/csv", 400, "invalid_csv"),
        # Valid UTF-8 but binary, or UTF-16 without its BOM: it was 422 "missing columns".
        (b"\x00\x01\x02\x03 binary", "text/csv", 400, "invalid_csv"),
        ("Id,MSZoning\n1,RL\n".encode("utf-16-le"), "text/csv", 400, "invalid_csv"),
    ]
    for body, media, status, error in cases:
        response = client.post("/v1/predict", content=body, headers={"Content-Type": media})
        assert (response.status_code, response.json()["error"]) == (status, error), body
    assert client.post("/v1/predict", content=b"{}").status_code == 415  # no Content-Type
    gzipped = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    refused = client.post("/v1/predict", content=b'{"records": []}', headers=gzipped)
    assert (refused.status_code, refused.json()["error"]) == (415, "unsupported_content_encoding")
    plain = {"Content-Type": "application/json", "Content-Encoding": "identity"}
    assert client.post("/v1/predict", content=b'{"records": []}', headers=plain).status_code == 200
    empty = client.post("/v1/predict", json={"records": []})
    assert empty.status_code == 200 and empty.json()["predictions"] == []


def test_serve_reads_what_predict_reads_and_says_what_it_does_not(
    client: TestClient, house_loaded: Loaded
) -> None:
    """A JSON body after a UTF-8 BOM was a 400 (predict and a CSV body drop the BOM); a body
    declared in another charset was read as UTF-8 all the same; a ';'-delimited CSV body was
    "lacks 79 columns" with every one listed (predict names the delimiter); a 5 MB text in a
    numeric field came back whole in the 422."""
    json_type = {"Content-Type": "application/json"}
    bom = client.post("/v1/predict", content=b'\xef\xbb\xbf{"records": []}', headers=json_type)
    assert bom.status_code == 200, bom.text
    for charset, status in (("utf-16", 415), ("latin-1", 415), ("UTF-8", 200), ('"utf-8"', 200)):
        declared = {"Content-Type": f"application/json; charset={charset}"}
        got = client.post("/v1/predict", content=b'{"records": []}', headers=declared)
        assert got.status_code == status, (charset, got.text)
    lines = TEST_CSV.read_text().splitlines()[:3]
    semicolons = "\n".join(line.replace(",", ";") for line in lines)
    refused = client.post("/v1/predict", content=semicolons, headers={"Content-Type": "text/csv"})
    body = refused.json()
    assert refused.status_code == 422 and "delimited by ';'" in body["message"], body["message"]
    assert len(body["detail"]) == 50
    record = _records(house_loaded, 1)[0]
    record["LotArea"] = "x" * 5_000_000
    huge = client.post("/v1/predict", json={"records": [record]})
    assert huge.status_code == 422 and len(huge.content) < 2_000, len(huge.content)
    assert huge.json()["detail"][0]["input"].endswith("... (5,000,000 characters)")


def test_a_body_of_many_bad_records_is_judged_in_bounded_memory(client: TestClient) -> None:
    """Validation stops at the first MAX_DETAIL problems: 20,000 empty records (79 missing
    columns each) are 1.6 million problems, which pydantic, judging the whole list at once,
    listed every one of (a million empty records took the server to 24 GB and the OOM killer)."""
    import tracemalloc

    from pipeline.serve.contract import MAX_DETAIL

    body = b'{"records": [' + b",".join([b"{}"] * 20_000) + b"]}"
    tracemalloc.start()
    try:
        response = client.post(
            "/v1/predict", content=body, headers={"Content-Type": "application/json"}
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 422
    doc = response.json()
    assert doc["message"] == (
        f"at least 79 problem(s) with the request body (the first {MAX_DETAIL} listed)"
    ), doc["message"]
    assert len(doc["detail"]) == MAX_DETAIL and {d["record"] for d in doc["detail"]} == {0}
    assert peak < 64 * 2**20, peak  # the parsed records, not a list of every problem
    many_ints = client.post("/v1/predict", json={"records": [7] * 20_000})
    assert many_ints.json()["message"] == f"at least {MAX_DETAIL} problem(s) with the request body"
    # One record of 3 columns: 76 missing, 50 listed; "76 problem(s)" did not say so.
    one = client.post("/v1/predict", json={"records": [{"LotArea": 1.0}]}).json()
    assert one["message"] == f"78 problem(s) with the request body (the first {MAX_DETAIL} listed)"


def test_extra_keys_are_ignored_and_reported(client: TestClient, house_loaded: Loaded) -> None:
    """Keys the model does not use do not fail the request; the response lists them."""
    records = _records(house_loaded, 2)
    records[0]["Colour"] = "red"
    records[1]["Id"] = 77
    with capture_logs() as logs:
        response = client.post("/v1/predict", json={"records": records})
    assert response.status_code == 200
    body = response.json()
    assert body["ignored_columns"] == ["Colour"]
    assert [p["Id"] for p in body["predictions"]] == [None, 77]
    access = [e for e in logs if e["event"] == "serve.request"]
    assert access[0]["ignored_columns"] == ["Colour"] and access[0]["rows"] == 2


def test_categorical_missing_markers_are_missing_like_in_files(
    client: TestClient, house_loaded: Loaded
) -> None:
    """ "NA" in a categorical column is a missing value, as `pipeline predict` reads it."""
    record = _records(house_loaded, 1)[0]
    assert record["Alley"] == "NA"
    as_text = client.post("/v1/predict", json={"records": [record, record]}).json()
    as_null = client.post("/v1/predict", json={"records": [{**record, "Alley": None}] * 2}).json()
    assert as_text["predictions"] == as_null["predictions"]
    unseen = client.post("/v1/predict", json={"records": [{**record, "Alley": "Moat"}] * 2})
    assert unseen.json()["predictions"] != as_text["predictions"]


def test_an_id_column_is_optional_in_a_csv_body_as_in_a_json_one(
    client: TestClient, house_loaded: Loaded
) -> None:
    """The release copies Id: a JSON record without it answered 200 with a null Id, a CSV body
    without it 422 ("has no id column"). Both now answer 200 with null ids, alike."""
    rows = _rows(2)
    header = [name for name in rows[0] if name != "Id"]
    body = "\n".join([",".join(header), *(",".join(r[n] for n in header) for r in rows)])
    response = client.post("/v1/predict", content=body, headers={"Content-Type": "text/csv"})
    assert response.status_code == 200, response.text
    records = []
    for row in rows:
        record = _record(house_loaded, row)
        record.pop("Id", None)
        records.append(record)
    typed = client.post("/v1/predict", json={"records": records})
    assert typed.status_code == 200, typed.text
    assert response.json()["predictions"] == typed.json()["predictions"]
    assert [p["Id"] for p in response.json()["predictions"]] == [None, None]


def test_csv_body_problems_name_row_and_column(client: TestClient) -> None:
    """A CSV with a text cell in a numeric column or a missing column is 422 with detail."""
    lines = TEST_CSV.read_text().splitlines()[:4]
    header = lines[0].split(",")
    cells = lines[2].split(",")
    cells[header.index("LotArea")] = "lots"
    bad = "\n".join([lines[0], lines[1], ",".join(cells), lines[3]])
    response = client.post("/v1/predict", content=bad, headers={"Content-Type": "text/csv"})
    assert response.status_code == 422
    assert [(d["record"], d["column"], d["input"]) for d in response.json()["detail"]] == [
        (1, "LotArea", "lots")
    ]
    keep = [i for i, name in enumerate(header) if name != "Street"]
    short = "\n".join(",".join(line.split(",")[i] for i in keep) for line in lines)
    response = client.post("/v1/predict", content=short, headers={"Content-Type": "text/csv"})
    assert response.status_code == 422
    assert response.json()["detail"] == [
        {"record": None, "column": "Street", "type": "missing", "message": "Column required"}
    ]
    # A numeric column twice (it was a 500: the cell check got a frame, not a column).
    area = header.index("LotArea")
    twice = "\n".join([lines[0] + ",LotArea"] + [f"{x},{x.split(',')[area]}" for x in lines[1:]])
    response = client.post("/v1/predict", content=twice, headers={"Content-Type": "text/csv"})
    assert response.status_code == 422, response.text[:300]
    assert response.json()["detail"] == [
        {"record": None, "column": "LotArea", "type": "duplicate",
         "message": "Column named more than once"}
    ]  # fmt: skip


def test_a_csv_header_without_rows_is_no_predictions_with_or_without_its_newline(
    client: TestClient,
) -> None:
    """Without a newline after it, the header alone was a 400 ("Empty CSV file or block: cannot
    infer number of columns"), where with one it is a 200 without predictions."""
    header = TEST_CSV.read_text().splitlines()[0]
    for body in (header + "\n", header):
        response = client.post("/v1/predict", content=body, headers={"Content-Type": "text/csv"})
        assert response.status_code == 200, response.text[:300]
        assert response.json()["predictions"] == []


def test_a_csv_body_with_a_header_wider_than_a_parser_block_is_read(client: TestClient) -> None:
    """A header over pyarrow's 1 MiB block (the model's columns and 150,000 others) is read
    like any other; it was a 400, "Empty CSV file or block: cannot infer number of columns"."""
    lines = TEST_CSV.read_text().splitlines()[:3]
    extra = [f"extra{i}" for i in range(150_000)]
    wide = [lines[0] + "," + ",".join(extra)] + [line + "," * len(extra) for line in lines[1:]]
    assert len(wide[0]) > 1 << 20
    narrow = client.post(
        "/v1/predict", content="\n".join(lines), headers={"Content-Type": "text/csv"}
    )
    response = client.post(
        "/v1/predict", content="\n".join(wide), headers={"Content-Type": "text/csv"}
    )
    assert response.status_code == 200, response.text[:300]
    body = response.json()
    assert body["predictions"] == narrow.json()["predictions"]
    assert body["ignored_columns_count"] == len(extra) + narrow.json().get(
        "ignored_columns_count", 0
    )


def test_a_bad_boolean_gets_field_level_detail_like_a_bad_number(flags: dict[str, Any]) -> None:
    """A boolean cell "maybe" is a 422 naming its record and column, in JSON and in CSV."""
    record = {"member": "maybe", "age": 30, "city": "north"}
    csv_body = "member,age,city\ntrue,30,north\nmaybe,old,east\n"
    with _client(_loaded(flags)) as client:
        as_json = client.post("/v1/predict", json={"records": [{**record, "member": True}, record]})
        as_csv = client.post("/v1/predict", content=csv_body, headers={"Content-Type": "text/csv"})
    assert as_json.status_code == 422
    detail = as_json.json()["detail"]
    assert [(d["record"], d["column"], d["type"], d["input"]) for d in detail] == [
        (1, "member", "bool_type", "maybe")
    ]
    assert as_csv.status_code == 422
    assert as_csv.json() == {
        "error": "invalid_records",
        "message": "2 value(s) are not valid for the model",
        "detail": [
            {"record": 1, "column": "age", "type": "float_parsing",
             "message": "Input should be a finite number", "input": "old"},
            {"record": 1, "column": "member", "type": "bool_parsing",
             "message": "Input should be true or false", "input": "maybe"},
        ],
    }  # fmt: skip


def test_a_cell_error_becomes_detail_from_its_fields(flags: dict[str, Any]) -> None:
    """A cell's ``DataError`` is a 422 whose detail comes from its fields; a file's has none."""
    contract = _loaded(flags).contract
    frame = pd.DataFrame({"member": ["true", "maybe"], "age": ["1", "2"], "city": ["a", "b"]})
    with pytest.raises(DataError) as caught:
        cells.booleans(frame["member"], "member", "the request", "fail", np.full(2, ""))
    refusal = contract.refusal(caught.value, frame)
    assert refusal.status == 422
    assert refusal.body() == {
        "error": "invalid_records",
        "message": caught.value.message,
        "detail": [{"record": 1, "column": "member", "type": "bool_parsing",
                    "message": "Input should be true or false", "input": "maybe"}],
    }  # fmt: skip
    assert contract.refusal(DataError("no rows")).body() == {
        "error": "invalid_records",
        "message": "no rows",
    }


def test_on_error_column_release_reports_bad_csv_rows_inline(house: dict[str, Any]) -> None:
    """With PIPELINE_RUN__ON_ERROR=column bound, a bad row gets an error and no prediction."""
    loaded = _loaded(house, on_error="column", id_column="Id")
    lines = TEST_CSV.read_text().splitlines()[:3]
    header = lines[0].split(",")
    cells = lines[1].split(",")
    cells[header.index("LotArea")] = "lots"
    body = "\n".join([lines[0], ",".join(cells), lines[2]])
    with _client(loaded) as client:
        got = client.post("/v1/predict", content=body, headers={"Content-Type": "text/csv"})
    assert got.status_code == 200
    first, second = got.json()["predictions"]
    assert first["prediction"] is None and "LotArea" in first["error"]
    assert second["prediction"] > 0 and second["error"] == ""
    # The same rows as JSON: the bad record was a 422 for the whole request, the release's
    # error column ignored; now the CSV body's answer, the same error, the same prediction.
    records = _records(loaded, 2)
    records[0]["LotArea"] = "lots"
    for record, line in zip(records, lines[1:], strict=True):
        record["Id"] = line.split(",")[0]  # as the CSV body's ids are read: text
    with _client(loaded) as client:
        as_json = client.post("/v1/predict", json={"records": records})
    assert as_json.status_code == 200, as_json.text[:300]
    assert as_json.json()["predictions"] == got.json()["predictions"]


def test_on_error_column_refuses_json_nan_as_the_strict_contract_and_predict_do(
    house: dict[str, Any],
) -> None:
    """A JSON body's NaN token (not JSON, though Python's parser reads it) was a missing value
    with PIPELINE_RUN__ON_ERROR=column (its records read as predict reads JSON lines) where
    the strict contract answers 422 and `pipeline predict` refuses the line: a 422 here too,
    naming the record and column."""
    loaded = _loaded(house, on_error="column")
    records = _records(loaded, 2)
    body = json.dumps({"records": records}).replace(
        f'"LotArea": {json.dumps(records[1]["LotArea"])}', '"LotArea": NaN'
    )
    assert "NaN" in body
    for on_error in ("fail", "column"):
        with _client(_loaded(house, on_error=on_error)) as client:
            got = client.post(
                "/v1/predict", content=body, headers={"Content-Type": "application/json"}
            )
        assert got.status_code == 422, (on_error, got.text[:300])
        found = got.json()["detail"]
        assert [(d["record"], d["column"]) for d in found] == [(1, "LotArea")], found


def test_body_limit_is_413_with_or_without_content_length(house_loaded: Loaded) -> None:
    """A body over max_body_bytes is refused whether its length is declared or streamed."""
    body = json.dumps({"records": _records(house_loaded, 5)}).encode()
    with _client(house_loaded, max_body_bytes=len(body) - 1) as client:
        declared = client.post("/v1/predict", content=body,
                               headers={"Content-Type": "application/json"})  # fmt: skip
        assert declared.status_code == 413 and declared.json()["error"] == "body_too_large"

        def chunks() -> Iterator[bytes]:
            yield body[:1000]
            yield body[1000:]

        streamed = client.post("/v1/predict", content=chunks(),
                               headers={"Content-Type": "application/json"})  # fmt: skip
        assert streamed.status_code == 413
    with _client(house_loaded, max_body_bytes=len(body)) as client:
        fits = client.post("/v1/predict", content=body,
                           headers={"Content-Type": "application/json"})  # fmt: skip
        assert fits.status_code == 200 and len(fits.json()["predictions"]) == 5


def test_readyz_is_503_until_the_release_has_loaded(house_loaded: Loaded) -> None:
    """While loading, healthz is 200 and readyz / model / predict are 503; then all are 200."""
    go = threading.Event()

    def slow_loader() -> Loaded:
        go.wait(30)
        return house_loaded

    ready = threading.Event()
    state = ServeState(ServeSettings(), loader=slow_loader)
    state.on_ready = lambda _: ready.set()
    with TestClient(create_app(state)) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        loading = client.get("/readyz")
        assert loading.status_code == 503 and loading.json() == {"status": "loading"}
        # HEAD, as load balancers' health checks send it (it was 405 for both probes).
        assert [client.head(p).status_code for p in ("/healthz", "/readyz")] == [200, 503]
        assert client.get("/v1/model").status_code == 503
        loading_predict = client.post("/v1/predict", json={"records": []})
        assert loading_predict.status_code == 503
        # Clients and proxies retry when told when: a worker that replaces a dead one answers
        # this while the other worker is ready.
        assert loading_predict.headers["retry-after"] == "1"
        assert client.get("/openapi.json").status_code == 503
        go.set()
        assert ready.wait(30)
        assert client.get("/readyz").json()["status"] == "ready"
        assert client.head("/readyz").status_code == 200
        assert client.get("/v1/model").json()["name"] == "house-prices"


def test_a_loader_failure_makes_readyz_report_failed(house_loaded: Loaded) -> None:
    """If loading raises, readyz says failed and the server is told to stop."""
    from pipeline.errors import NotFoundError

    def failing() -> Loaded:
        raise NotFoundError("no release house-prices@v9")

    stopped = threading.Event()
    state = ServeState(ServeSettings(), loader=failing)
    state.on_failure = stopped.set
    with TestClient(create_app(state)) as client:
        assert stopped.wait(30)
        assert client.get("/readyz").json() == {"status": "failed"}
    assert isinstance(state.failure, NotFoundError)


def test_a_bug_is_a_500_without_internals_and_logged(
    client: TestClient, house_loaded: Loaded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected exception (injected into scoring) is a JSON 500 and a serve.internal_error
    event."""

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected fault")

    monkeypatch.setattr(house_loaded.predictor, "values", broken)
    with capture_logs() as logs:
        response = client.post("/v1/predict", json={"records": _records(house_loaded, 1)})
    assert response.status_code == 500
    assert response.json()["error"] == "internal" and "injected" not in response.text
    assert response.headers["x-request-id"]
    bug = next(e for e in logs if e["event"] == "serve.internal_error")
    assert "injected fault" in bug["traceback"]
    assert next(e for e in logs if e["event"] == "serve.request")["status"] == 500


def test_request_ids_are_echoed_or_made(client: TestClient) -> None:
    """A sane X-Request-ID comes back unchanged; a missing or odd one is replaced."""
    assert client.get("/healthz", headers={"X-Request-ID": "job-42"}).headers["x-request-id"] == (
        "job-42"
    )
    made = client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
    assert len(made.headers["x-request-id"]) == 32


def test_model_document_lists_schema_and_metrics(client: TestClient, house_loaded: Loaded) -> None:
    """/v1/model carries the ids, the input schema with kinds, the metrics and run settings."""
    doc = client.get("/v1/model").json()
    p = house_loaded.predictor
    assert (doc["name"], doc["package_id"], doc["build_id"]) == (p.name, p.package_id, p.build_id)
    assert doc["input_schema"]["columns"][0] == {"name": "MSSubClass", "kind": "numeric"}
    assert doc["metrics"]["test"]["rmse_log"] == house_loaded.predictor.metrics["test"]["rmse_log"]
    assert doc["run"]["id_column"] == "Id" and doc["release"] is None


def test_serve_settings_come_from_the_environment(tmp_path: Path, cli: Any) -> None:
    """PORT sets the port unless PIPELINE_SERVE__PORT does; the token is a redacted secret."""
    base = {"PIPELINE_ENV_FILE": os.devnull}
    assert load(base).settings.serve.port == 8080
    assert load({**base, "PORT": "5000"}).settings.serve.port == 5000
    both = load({**base, "PORT": "5000", "PIPELINE_SERVE__PORT": "6000"})
    assert both.settings.serve.port == 6000 and both.origins[("serve", "port")] == "env"
    secret = load({**base, "PIPELINE_SERVE__TOKEN": "tok-123456"}).settings
    assert secret.serve.token is not None and "tok-123456" not in json.dumps(secret.public())
    shown = cli("config", "show", "--format", "json", env={"PIPELINE_SERVE__TOKEN": "tok-123456"})
    assert shown.exit_code == 0 and "tok-123456" not in shown.output
    rows = {r["env"]: r for r in json.loads(shown.stdout.splitlines()[-1])["settings"]}
    assert rows["PIPELINE_SERVE__TOKEN"]["value"] == "**********"


def test_access_log_sampling_keeps_every_refusal(house_loaded: Loaded) -> None:
    """PIPELINE_SERVE__ACCESS_LOG_SAMPLE=0.25: one successful request in four is logged, evenly
    and without a random draw; every refused request is logged."""
    with _client(house_loaded, access_log_sample=0.25) as client, capture_logs() as logs:
        for _ in range(8):
            ok = client.post("/v1/predict", json={"records": _records(house_loaded, 1)})
            assert ok.status_code == 200
        for _ in range(3):
            refused = client.post("/v1/predict", content=b"a=1",
                                  headers={"Content-Type": "text/plain"})  # fmt: skip
            assert refused.status_code == 415
    logged = [e["status"] for e in logs if e["event"] == "serve.request"]
    assert logged == [200, 200, 415, 415, 415]


def test_a_csv_body_reads_the_text_nan_as_pipeline_predict_does(
    titanic: dict[str, Any], tmp_path: Path
) -> None:
    """The text NaN in a numeric cell (Titanic's missing markers are only '?' and '') was a 422
    here (training's number rule) where `pipeline predict` read it as a missing value, and so
    did this server with PIPELINE_RUN__ON_ERROR=column. A CSV body is read as predict reads the
    file: NaN is missing, in both modes, and the rows score as predict scores them; inf is
    still refused."""
    from tests.conftest import run_cli

    header = "pclass,sex,age,sibsp,parch,fare,cabin,embarked"
    body = f"{header}\n1,male,30,0,0,NaN,,S\n3,female,NaN,1,0,7.25,,C\n2,male,,0,0,,,S\n"
    path = tmp_path / "rows.csv"
    path.write_text(body)
    done = run_cli("predict", str(path), "--package", str(titanic["package"]), "-o",
                   str(tmp_path / "p.csv"), env=titanic["env"])  # fmt: skip
    assert done.returncode == 0, done.stderr
    expected = (tmp_path / "p.csv").read_text().splitlines()[1:]
    csv_type = {"Content-Type": "text/csv"}
    for on_error in ("fail", "column"):
        with _client(_loaded(titanic, on_error=on_error)) as client:
            got = client.post("/v1/predict", content=body, headers=csv_type)
            assert got.status_code == 200, got.text
            predictions = [str(p["prediction"]) for p in got.json()["predictions"]]
            assert predictions == [line.split(",")[0].strip('"') for line in expected]
    with _client(_loaded(titanic)) as client:
        refused = client.post("/v1/predict", content=body.replace("NaN", "inf"), headers=csv_type)
        assert refused.status_code == 422, refused.text


def test_an_unknown_route_or_method_is_an_error_in_the_shape_of_the_others(
    client: TestClient,
) -> None:
    """An unknown path was 404 {"detail": "Not Found"} and `GET /v1/predict` 405 {"detail":
    "Method Not Allowed"}: every other refusal is {"error", "message"} saying what to do."""
    missing = client.get("/v1/predictions")
    assert missing.status_code == 404
    assert missing.json() == {
        "error": "not_found",
        "message": "no route /v1/predictions: the server answers GET /healthz, GET /readyz, "
        "GET /v1/model, POST /v1/predict, GET /docs, GET /openapi.json",
    }
    wrong = client.get("/v1/predict")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert wrong.json()["error"] == "method_not_allowed"
    assert wrong.json()["message"].startswith("GET /v1/predict is not allowed: the server answers")


def test_a_body_that_is_not_what_its_type_says_is_told_so(
    client: TestClient, house_loaded: Loaded
) -> None:
    """A gzipped CSV body was "not UTF-8 text", JSON sent as text/csv "lacks 79 column(s)",
    CSV sent as application/json "expected ident at line 1 column 2": each says what the body
    looks like and what to send."""
    import gzip

    records = _records(house_loaded, 1)
    header = ",".join(records[0])
    row = ",".join("" if v is None else str(v) for v in records[0].values())
    csv_body = f"{header}\n{row}\n".encode()
    zipped = client.post("/v1/predict", content=gzip.compress(csv_body),
                         headers={"Content-Type": "text/csv"})  # fmt: skip
    assert (
        zipped.status_code == 400
        and "it is gzip-compressed: send it uncompressed" in (zipped.json()["message"])
    )
    as_csv = client.post("/v1/predict", content=json.dumps({"records": records}),
                         headers={"Content-Type": "text/csv"})  # fmt: skip
    assert as_csv.status_code == 422
    assert as_csv.json()["message"].endswith(
        "; it looks like JSON: send it with Content-Type: application/json"
    ), as_csv.json()["message"]
    as_json = client.post("/v1/predict", content=csv_body,
                          headers={"Content-Type": "application/json"})  # fmt: skip
    assert as_json.status_code == 400
    assert as_json.json()["message"].endswith(
        "; it looks like CSV: send it with Content-Type: text/csv"
    ), as_json.json()["message"]
    good = client.post("/v1/predict", content=csv_body, headers={"Content-Type": "text/csv"})
    assert good.status_code == 200, good.text
