"""`pipeline serve` as a real process: probes, predictions equal to `pipeline predict`, shutdown."""

from __future__ import annotations

import csv
import io
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest
from tests.conftest import run_cli
from tests.serve.conftest import TEST_CSV, invoked, serve_once, wait_ready

# What `pipeline predict` reads as missing in house-prices-test.csv (the package's defaults).
MISSING = {"", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "#N/A", "-NaN", "-nan"}
LOCAL = {"PIPELINE_SERVE__HOST": "127.0.0.1"}


def _cli_predictions(release: dict[str, Any], source: Path, *args: str) -> list[dict[str, str]]:
    out = release["root"] / f"cli-{source.stem}.csv"
    invoked("predict", str(source), "-o", str(out), *args, root=release["root"],
            env=release["env"])  # fmt: skip
    with out.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _records(model: dict[str, Any], source: Path, id_column: str | None) -> list[dict[str, Any]]:
    """The rows of a CSV file as JSON records typed by the model's input schema.

    Categorical cells go as they are written (``NA`` included: the server reads it as missing,
    as `pipeline predict` does); numeric cells become numbers, or null when missing.
    """
    kinds = {c["name"]: c["kind"] for c in model["input_schema"]["columns"]}
    records = []
    with source.open(newline="") as fh:
        for row in csv.DictReader(fh):
            record: dict[str, Any] = {}
            for name, kind in kinds.items():
                value = row[name]
                if kind == "numeric":
                    record[name] = None if value in MISSING else float(value)
                else:
                    record[name] = value
            if id_column:
                record[id_column] = int(row[id_column])
            records.append(record)
    return records


def test_probes_model_metadata_and_access_log(serve: Any, house: dict[str, Any]) -> None:
    """healthz answers at once, readyz once loaded, /v1/model describes the release; JSON logs."""
    server = serve(env={**house["env"], **LOCAL, "PIPELINE_RELEASE": house["release"]},
                   cwd=house["root"])  # fmt: skip
    assert httpx2.get(f"{server.url}/healthz").json() == {"status": "ok"}
    ready = server.wait_ready()
    assert 0 < ready["seconds"] < 60  # generous: the machine is shared
    assert ready["release"] == house["release"] == "house-prices@v1"
    model = httpx2.get(f"{server.url}/v1/model").json()
    assert model["name"] == "house-prices" and model["version"] == "0.1.0"
    assert model["package_id"] == house["package_id"] and len(model["build_id"]) == 64
    assert model["release"] == "house-prices@v1" and model["task"] == "regression"
    kinds = {c["name"]: c["kind"] for c in model["input_schema"]["columns"]}
    assert kinds["LotArea"] == "numeric" and kinds["MSZoning"] == "categorical"
    assert len(kinds) == 79 and "SalePrice" not in kinds and "Id" not in kinds
    assert model["metrics"]["test"]["rmse_log"] > 0
    body = {"records": _records(model, TEST_CSV, "Id")[:3]}
    response = httpx2.post(f"{server.url}/v1/predict", json=body, headers={"X-Request-ID": "abc-1"})
    assert response.status_code == 200 and response.headers["x-request-id"] == "abc-1"
    assert server.stop() == 0
    access = [e for e in server.named("serve.request") if e["path"] == "/v1/predict"]
    assert len(access) == 1
    entry = access[0]
    assert (entry["method"], entry["status"], entry["rows"]) == ("POST", 200, 3)
    assert entry["request_id"] == "abc-1" and entry["duration_ms"] > 0
    paths = {e["path"] for e in server.named("serve.request")}
    assert paths >= {"/healthz", "/readyz", "/v1/model"}
    # uvicorn's own access log is off: every stdout line is one of our JSON events.
    assert all(e["event"].startswith("serve.") for e in server.events())
    assert server.named("serve.stopped")[0]["unanswered"] == 0


def test_predictions_equal_pipeline_predict_for_json_and_csv(
    serve: Any, house: dict[str, Any]
) -> None:
    """Every row of the real test file gets exactly the number `pipeline predict` writes."""
    expected = _cli_predictions(house, TEST_CSV, "--release", house["release"])
    assert len(expected) == 1459
    server = serve("--release", house["release"], env={**house["env"], **LOCAL},
                   cwd=house["root"])  # fmt: skip
    server.wait_ready()
    model = httpx2.get(f"{server.url}/v1/model").json()
    body = {"records": _records(model, TEST_CSV, "Id")}
    as_json = httpx2.post(f"{server.url}/v1/predict", json=body, timeout=60).json()
    as_csv = httpx2.post(f"{server.url}/v1/predict", content=TEST_CSV.read_bytes(),
                        headers={"Content-Type": "text/csv"}, timeout=60).json()  # fmt: skip
    for got in (as_json, as_csv):
        assert got["model"] == "house-prices" and got["release"] == house["release"]
        assert got["package_id"] == house["package_id"] and got["version"] == "0.1.0"
        assert len(got["predictions"]) == 1459
        assert [str(p["Id"]) for p in got["predictions"]] == [row["Id"] for row in expected]
        assert [p["prediction"] for p in got["predictions"]] == [
            float(row["prediction"]) for row in expected
        ]
    assert server.stop() == 0


def test_one_record_per_request_from_8_clients_in_shuffled_order_equals_pipeline_predict(
    serve: Any, house: dict[str, Any]
) -> None:
    """All 1,459 test rows, one record per request, 8 concurrent clients, shuffled, to two
    worker processes that micro-batch: each answer is `pipeline predict`'s number for its row
    (which requests share a scoring pass, and on which worker, changes nothing)."""
    import random

    expected = _cli_predictions(house, TEST_CSV, "--release", house["release"])
    server = serve("--release", house["release"], cwd=house["root"],
                   env={**house["env"], **LOCAL, "PIPELINE_SERVE__WORKERS": "2"})  # fmt: skip
    wait_ready(server)
    model = httpx2.get(f"{server.url}/v1/model").json()
    records = _records(model, TEST_CSV, "Id")
    order = list(range(len(records)))
    random.Random(5).shuffle(order)
    got: dict[int, float] = {}

    def client(mine: list[int]) -> None:
        with httpx2.Client(base_url=server.url, timeout=60) as http:
            for i in mine:
                answer = http.post("/v1/predict", json={"records": [records[i]]}).json()
                (prediction,) = answer["predictions"]
                assert prediction["Id"] == records[i]["Id"]
                got[i] = prediction["prediction"]

    threads = [threading.Thread(target=client, args=(order[k::8],)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert server.stop() == 0
    assert [got[i] for i in range(len(records))] == [float(r["prediction"]) for r in expected]
    batched = [e for e in server.named("serve.request") if e["path"] == "/v1/predict"]
    assert len(batched) == 1459 and {e["worker"] for e in batched} == {0, 1}


def test_two_threads_and_two_passes_at_once_give_pipeline_predict_s_bytes(
    serve: Any, house: dict[str, Any]
) -> None:
    """PIPELINE_SERVE__THREADS=2 (torch threads per pass) with 2 passes at a time: 1,459-row
    requests are scored while one-record requests from 4 clients share the other passes;
    every answer is `pipeline predict`'s number (one torch thread per kernel): neither the
    thread count nor a concurrent pass that caps it (``threads_at_most``) changes a bit."""
    expected = _cli_predictions(house, TEST_CSV, "--release", house["release"])
    want = [float(row["prediction"]) for row in expected]
    env = {**house["env"], **LOCAL, "PIPELINE_SERVE__THREADS": "2",
           "PIPELINE_SERVE__CONCURRENCY": "2"}  # fmt: skip
    server = serve("--release", house["release"], env=env, cwd=house["root"])
    server.wait_ready()
    model = httpx2.get(f"{server.url}/v1/model").json()
    records = _records(model, TEST_CSV, "Id")
    wrong: list[Any] = []

    def whole() -> None:
        for _ in range(3):
            got = httpx2.post(f"{server.url}/v1/predict", json={"records": records}, timeout=60)
            if [p["prediction"] for p in got.json()["predictions"]] != want:
                wrong.append("the whole file")

    def singles(mine: range) -> None:
        with httpx2.Client(base_url=server.url, timeout=60) as http:
            for i in mine:
                (got,) = http.post("/v1/predict", json={"records": [records[i]]}).json()[
                    "predictions"
                ]
                if got["prediction"] != want[i]:
                    wrong.append(i)

    clients = [threading.Thread(target=whole)]
    clients += [threading.Thread(target=singles, args=(range(k, len(records), 8),))
                for k in range(4)]  # fmt: skip
    for t in clients:
        t.start()
    for t in clients:
        t.join()
    assert server.stop() == 0
    assert wrong == []
    assert len([e for e in server.named("serve.request") if e["path"] == "/v1/predict"]) > 700


def test_titanic_package_returns_classes_and_probabilities(
    serve: Any, titanic: dict[str, Any], tmp_path: Path
) -> None:
    """A binary model served from --package gives the label and both probabilities, as predict."""
    rows = tmp_path / "passengers.csv"
    source = (Path(__file__).resolve().parents[2] / "src/pipeline/datasets/titanic.csv").read_text()
    rows.write_text("\n".join(source.splitlines()[:201]) + "\n")
    expected = _cli_predictions(titanic, rows, "--package", str(titanic["package"]))
    server = serve("--package", str(titanic["package"]), env={**titanic["env"], **LOCAL},
                   cwd=titanic["root"])  # fmt: skip
    server.wait_ready()
    model = httpx2.get(f"{server.url}/v1/model").json()
    assert model["task"] == "binary" and model["release"] is None
    assert model["classes"] == ["0", "1"] and model["name"] == "titanic"
    got = httpx2.post(f"{server.url}/v1/predict", content=rows.read_bytes(),
                     headers={"Content-Type": "text/csv"}).json()  # fmt: skip
    assert got["release"] is None and len(got["predictions"]) == 200
    for mine, theirs in zip(got["predictions"], expected, strict=True):
        assert set(mine) == {"prediction", "probability_0", "probability_1"}
        assert mine["prediction"] == theirs["prediction"]
        assert mine["probability_1"] == float(theirs["probability_1"])
        assert mine["probability_0"] + mine["probability_1"] == pytest.approx(1.0)
    # JSON records: categorical cells are strings; `?` is this dataset's missing marker.
    record = {"pclass": "3", "sex": "male", "age": None, "sibsp": 0, "parch": 0, "fare": 7.25,
              "cabin": "?", "embarked": "S"}  # fmt: skip
    one = httpx2.post(f"{server.url}/v1/predict", json={"records": [record]}).json()
    assert one["predictions"][0]["prediction"] in ("0", "1")
    assert server.stop() == 0


def test_bearer_token_is_required_and_never_logged(serve: Any, house: dict[str, Any]) -> None:
    """With PIPELINE_SERVE__TOKEN set, /v1/* needs it (401 otherwise); probes stay open."""
    token = "s3cret-token-value"
    with socket.socket() as probe:  # PORT, the platform's variable, names the port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = serve("--release", house["release"], port=None,
                   env={**house["env"], **LOCAL, "PIPELINE_SERVE__TOKEN": token,
                        "PORT": str(port)}, cwd=house["root"])  # fmt: skip
    assert server.port == port
    server.wait_ready()
    url = f"{server.url}/v1/model"
    missing = httpx2.get(url)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["error"] == "unauthorized"
    assert httpx2.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx2.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    predict = httpx2.post(f"{server.url}/v1/predict", json={"records": []})
    assert predict.status_code == 401
    assert httpx2.get(f"{server.url}/healthz").status_code == 200
    schema = httpx2.get(f"{server.url}/openapi.json").json()
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert schema["paths"]["/v1/predict"]["post"]["security"] == [{"bearer": []}]
    assert server.stop() == 0
    assert token not in "".join(server.lines) and token not in server.stderr


def test_a_category_spelt_otherwise_is_named_in_the_answer_and_the_log(
    serve: Any, titanic: dict[str, Any]
) -> None:
    """`{"sex": "Female"}` was scored as an unknown category (the prediction flipped) with no
    word, where `pipeline predict` warns: the answer names the value and its known spelling
    (JSON and CSV bodies), the log says it once per process, and a known value adds nothing."""
    server = serve("--package", str(titanic["package"]), env={**titanic["env"], **LOCAL},
                   cwd=titanic["root"])  # fmt: skip
    server.wait_ready()
    record = {"pclass": "1", "sex": "female", "age": 30, "sibsp": 0, "parch": 0, "fare": 80.0,
              "cabin": "?", "embarked": "S"}  # fmt: skip
    url = f"{server.url}/v1/predict"
    known = httpx2.post(url, json={"records": [record]}).json()
    assert "misspelt_categories" not in known
    for _ in range(2):
        got = httpx2.post(url, json={"records": [record, {**record, "sex": " Female"}]}).json()
        assert got["misspelt_categories"] == {"sex": {" Female": "female"}}, got
        assert got["predictions"][0] == known["predictions"][0]
    header = ",".join(record)
    row = ",".join(str(v) for v in {**record, "sex": "FEMALE"}.values())
    csv_body = f"{header}\n{row}\n".encode()
    got = httpx2.post(url, content=csv_body, headers={"Content-Type": "text/csv"}).json()
    assert got["misspelt_categories"] == {"sex": {"FEMALE": "female"}}, got
    assert server.stop() == 0
    said = [line for line in server.lines if "serve.misspelt_categories" in line]
    assert len(said) == 2 and "' Female' for 'female'" in said[0], said  # each value once


@pytest.mark.parametrize("token", ["", "   "])
def test_an_empty_token_is_refused_not_read_as_no_token(house: dict[str, Any], token: str) -> None:
    """`PIPELINE_SERVE__TOKEN=$TOKEN` with the secret not injected served /v1/* to anyone,
    without a word: an empty (or blank) token is exit 3 naming the variable, before the
    server starts; the variable unset serves without one."""
    env = {**house["env"], **LOCAL, "PIPELINE_SERVE__TOKEN": token}
    result = run_cli("serve", "--release", house["release"], env=env, cwd=house["root"])
    assert result.returncode == 3, result.stderr
    assert result.stderr.count("\n") == 1 and "PIPELINE_SERVE__TOKEN" in result.stderr
    assert "serve would answer every request" in result.stderr


def test_sigterm_finishes_requests_in_flight_refuses_new_ones_and_exits_0(
    serve: Any, house: dict[str, Any]
) -> None:
    """Requests accepted before SIGTERM all get their predictions; new connections are refused."""
    server = serve("--release", house["release"],
                   env={**house["env"], **LOCAL, "PIPELINE_LOG_LEVEL": "debug"},
                   cwd=house["root"])  # fmt: skip
    server.wait_ready()
    lines = TEST_CSV.read_text().splitlines()
    body = "\n".join(lines + lines[1:] + lines[1:]).encode()  # 4,377 rows: long enough
    results: list[Any] = []

    def post() -> None:
        try:
            response = httpx2.post(f"{server.url}/v1/predict", content=body, timeout=120,
                                  headers={"Content-Type": "text/csv"})  # fmt: skip
            results.append((response.status_code, len(response.json()["predictions"])))
        except httpx2.HTTPError as exc:  # would mean an accepted request was lost
            results.append(repr(exc))

    clients = [threading.Thread(target=post) for _ in range(6)]
    for client in clients:
        client.start()
    starts = 0
    deadline = time.monotonic() + 60
    while starts < 6 and time.monotonic() < deadline:
        starts = sum(e["path"] == "/v1/predict" for e in server.named("serve.request_start"))
        time.sleep(0.01)
    assert starts == 6
    server.terminate()
    server.wait_event("serve.draining")
    refused = False
    while server.proc.poll() is None and not refused:
        try:
            httpx2.get(f"{server.url}/healthz", timeout=1)
        except httpx2.ConnectError:
            refused = True  # the listening socket closed while requests were still in flight
    for client in clients:
        client.join(120)
    assert results == [(200, 4377)] * 6
    assert refused
    assert server.wait() == 0
    stopped = server.named("serve.stopped")[0]
    assert stopped["signal"] == "SIGTERM" and stopped["unanswered"] == 0
    assert server.named("serve.draining")[0]["in_flight"] >= 1


def test_a_request_the_grace_period_cuts_off_gets_a_503_not_a_500(
    serve: Any, house: dict[str, Any]
) -> None:
    """PIPELINE_SERVE__GRACEFUL_TIMEOUT ran out with a request in flight (here one whose body is
    still arriving): uvicorn cancelled it and answered 500 "Internal Server Error", a traceback
    went to the log, and serve.stopped said no request was left unanswered. Now: a 503 that says
    the server stopped, with Retry-After and Connection: close, and the request is counted."""
    server = serve("--release", house["release"],
                   env={**house["env"], **LOCAL, "PIPELINE_LOG_LEVEL": "debug",
                        "PIPELINE_SERVE__GRACEFUL_TIMEOUT": "1"},
                   cwd=house["root"])  # fmt: skip
    server.wait_ready()
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
                     b"Content-Length: 100000\r\n\r\nId,MSSubClass\n")  # fmt: skip
        # Its own start: wait_ready's /readyz logged one before it (this test stopped the
        # server before the POST was read, on CI: the connection reset, nothing unanswered).
        server.wait_event("serve.request_start", path="/v1/predict")
        server.terminate()
        answer = b""
        try:
            while chunk := conn.recv(65536):
                answer += chunk
        except ConnectionResetError:
            # The server closed the connection with the request's body unread: the kernel may
            # answer the rest of the body with a reset, which can discard the 503 before it is
            # read (TCP's doing; seen once in a CI run). The server's own record is below.
            pass
    if answer:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503"), answer[:300]
        assert b"retry-after: 1" in head.lower() and b"connection: close" in head.lower()
        assert b'"error":"shutting_down"' in body
    assert server.wait() == 0
    stopped = server.named("serve.stopped")[0]
    assert stopped["unanswered"] == 1, (stopped, server.named("serve.request"))
    (request,) = [e for e in server.named("serve.request") if e["path"] == "/v1/predict"]
    assert request["status"] == 503 and "graceful timeout" in request["cancelled"]
    assert "Traceback" not in "".join(server.lines) + server.stderr


def test_a_csv_body_past_the_deadline_gets_504_as_a_json_body_does(
    serve: Any, house: dict[str, Any]
) -> None:
    """PIPELINE_SERVE__DEADLINE applied to JSON bodies only: a CSV body was answered 200 after
    however long it took. Now 504 deadline_exceeded for both, and the server stops cleanly."""
    server = serve("--release", house["release"],
                   env={**house["env"], **LOCAL, "PIPELINE_SERVE__DEADLINE": "0.001"},
                   cwd=house["root"])  # fmt: skip
    server.wait_ready()
    body = TEST_CSV.read_bytes()  # 1,459 rows: parsing alone takes longer than a millisecond
    with httpx2.Client(base_url=server.url, timeout=60) as client:
        late = client.post("/v1/predict", content=body, headers={"Content-Type": "text/csv"})
    assert late.status_code == 504, late.text
    assert late.json()["error"] == "deadline_exceeded"
    assert "PIPELINE_SERVE__DEADLINE" in late.json()["message"]
    assert server.stop() == 0
    (request,) = [e for e in server.named("serve.request") if e["path"] == "/v1/predict"]
    assert request["status"] == 504


def test_a_second_sigterm_during_the_drain_stops_at_once_without_a_traceback(
    serve: Any, house: dict[str, Any]
) -> None:
    """A second signal stops at once (exit 0): uvicorn logged the lifespan's cancellation as
    a `serve.uvicorn` error holding a traceback, which the README reserves for bugs."""
    server = serve("--release", house["release"],
                   env={**house["env"], **LOCAL, "PIPELINE_SERVE__DRAIN_SECONDS": "30"},
                   cwd=house["root"])  # fmt: skip
    server.wait_ready()
    server.terminate()
    server.wait_event("serve.draining")
    t0 = time.monotonic()
    server.terminate()
    assert server.wait() == 0 and time.monotonic() - t0 < 20
    assert "Traceback" not in "".join(server.lines) + server.stderr
    assert not [e for e in server.named("serve.uvicorn") if e.get("level") == "error"]


def test_drain_turns_readyz_503_while_still_serving(serve: Any, house: dict[str, Any]) -> None:
    """With a drain period, SIGTERM makes /readyz 503 at once, yet requests are still answered."""
    server = serve("--release", house["release"],
                   env={**house["env"], **LOCAL, "PIPELINE_SERVE__DRAIN_SECONDS": "5"},
                   cwd=house["root"])  # fmt: skip
    server.wait_ready()
    with httpx2.Client(base_url=server.url) as client:
        assert client.get("/readyz").json()["status"] == "ready"
        server.terminate()
        server.wait_event("serve.draining")
        readyz = client.get("/readyz")
        assert readyz.status_code == 503 and readyz.json()["status"] == "draining"
        csv_rows = "\n".join(TEST_CSV.read_text().splitlines()[:3]).encode()
        late = client.post("/v1/predict", content=csv_rows, headers={"Content-Type": "text/csv"})
        assert late.status_code == 200 and len(late.json()["predictions"]) == 2
    assert server.wait() == 0
    assert server.named("serve.stopped")[0]["unanswered"] == 0


def test_a_release_that_cannot_be_loaded_exits_with_its_code(
    serve: Any, house: dict[str, Any]
) -> None:
    """A missing release is exit 8 with one line on stderr; no release at all is exit 3."""
    server = serve("--release", "house-prices@v9", env={**house["env"], **LOCAL},
                   cwd=house["root"])  # fmt: skip
    assert server.wait() == 8
    assert server.stderr.startswith("error: ") and "v9" in server.stderr
    assert len(server.stderr.strip().splitlines()) == 1 and "Traceback" not in server.stderr
    assert server.named("error")[0]["exit_code"] == 8
    server = serve(env={**house["env"], **LOCAL}, cwd=house["root"])
    assert server.wait() == 3
    assert "PIPELINE_RELEASE" in server.stderr and "Traceback" not in server.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_port_in_use_is_a_config_error(house: dict[str, Any], workers: str) -> None:
    """Binding a port that is taken exits 3 and names the setting to change (one process, or
    the supervisor of several)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {**house["env"], **LOCAL, "PIPELINE_SERVE__PORT": str(taken.getsockname()[1]),
               "PIPELINE_RELEASE": house["release"],
               "PIPELINE_SERVE__WORKERS": workers}  # fmt: skip
        done = serve_once(env, house["root"])
    assert done.returncode == 3, done.stderr
    assert "PIPELINE_SERVE__PORT" in done.stderr and "Traceback" not in done.stderr
    # One line, with the reason: uvicorn's own "ERROR: [Errno 98] ..." line came first.
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Address already in use" in done.stderr


def test_a_host_that_does_not_resolve_is_one_line(house: dict[str, Any]) -> None:
    """--host 999.1.1.1: exit 3 saying the host does not resolve (it said "the address is in
    use or not allowed; set PORT", and uvicorn's line came first)."""
    env = {**house["env"], "PIPELINE_SERVE__HOST": "999.1.1.1", "PIPELINE_SERVE__PORT": "0",
           "PIPELINE_RELEASE": house["release"]}  # fmt: skip
    done = serve_once(env, house["root"])
    assert done.returncode == 3, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "999.1.1.1:0: the host does not resolve" in done.stderr
    assert "PIPELINE_SERVE__HOST" in done.stderr


def test_stdout_lines_are_json(serve: Any, house: dict[str, Any]) -> None:
    """A malformed HTTP request is logged as a JSON event too, never as a bare uvicorn line."""
    server = serve("--release", house["release"], env={**house["env"], **LOCAL},
                   cwd=house["root"])  # fmt: skip
    server.wait_ready()
    with socket.create_connection(("127.0.0.1", server.port)) as raw:
        raw.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        raw.settimeout(5)
        reply = io.BytesIO()
        try:
            while chunk := raw.recv(4096):
                reply.write(chunk)
        except TimeoutError:
            pass
    assert reply.getvalue().startswith(b"HTTP/1.1 400")
    assert server.stop() == 0
    assert server.named("serve.uvicorn")  # uvicorn's warning, as a structured event
