"""Datasets from ``s3://bucket/key`` (``PIPELINE_DATA__SOURCE``) on the suite's real S3 server.

The same AWS_* credentials as an s3:// store; cached by sha256 in the store as http(s) data is;
each failure a one-line SourceError (exit 5), whatever store the run uses.
"""

from __future__ import annotations

import hashlib
import socket
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import TITANIC_CSV, event, one_error_line

from pipeline.store.s3_client import open_client

pytestmark = [pytest.mark.s3, pytest.mark.slow]

BUCKET = "pipeline-test"
SMALL = {
    "PIPELINE_PRESET": "titanic",
    "PIPELINE_TRAIN__MAX_EPOCHS": "3",
    "PIPELINE_MODEL__HIDDEN": "[32]",
    "PIPELINE_MODEL__MEMBERS": "1",
}


def _upload(key: str, data: bytes) -> str:
    """Put ``data`` under ``key`` of the test bucket (credentials from the environment)."""
    import obstore

    obstore.put(_client(), key, data)
    return f"s3://{BUCKET}/{key}"


def _client() -> Any:
    return open_client(BUCKET, timeout=5, retries=0, allow_http=True)


def _ok(result: Any) -> Any:
    assert result.exit_code == 0, result.output[-3000:]
    return result


def test_a_dataset_on_s3_is_fetched_cached_by_sha256_trained_on_and_pinned(
    cli: Any, s3_env: Mapping[str, str]
) -> None:
    """`data fetch` downloads the object into the s3:// store's cache, `train` reads it, a
    wrong pin is refused (exit 4, nothing cached), and once pinned the cached copy is used
    even after the object is gone from the bucket."""
    body = TITANIC_CSV.read_bytes()
    digest = hashlib.sha256(body).hexdigest()
    key = f"data-{uuid.uuid4().hex[:8]}/titanic.csv"
    env = {**s3_env, **SMALL, "PIPELINE_DATA__SOURCE": _upload(key, body)}

    fetched = event(_ok(cli("data", "fetch", env=env)).stdout, "data.summary")
    assert (fetched["sha256"], fetched["cached"]) == (digest, False)
    assert fetched["uri"] == env["PIPELINE_DATA__SOURCE"] and fetched["bytes"] == len(body)
    stored = f"{s3_env['PIPELINE_STORE']}/datasets/{digest}/titanic.csv"
    assert fetched["path"] == stored  # the store's copy, not the local scratch copy's path
    trained = _ok(cli("train", env=env))
    assert event(trained.stdout, "data.fetched")["sha256"] == digest

    wrong = cli("data", "fetch", env={**env, "PIPELINE_DATA__SHA256": "0" * 64})
    assert wrong.exit_code == 4, wrong.output
    assert f"has sha256 {digest} but PIPELINE_DATA__SHA256 expects" in one_error_line(wrong)

    import obstore

    obstore.delete(_client(), key)  # the pin alone now finds the data: no request for it
    again = _ok(cli("data", "fetch", env={**env, "PIPELINE_DATA__SHA256": digest}))
    assert event(again.stdout, "data.summary")["cached"] is True
    assert event(again.stdout, "data.summary")["path"] == stored


def test_a_parquet_dataset_on_s3_is_read_by_its_magic_bytes(
    cli: Any, s3_env: Mapping[str, str], tmp_path: Path
) -> None:
    """A .parquet object is cached under its own name and trains like the CSV."""
    import pandas as pd

    local = tmp_path / "titanic.parquet"
    pd.read_csv(TITANIC_CSV).to_parquet(local)
    uri = _upload(f"data-{uuid.uuid4().hex[:8]}/titanic.parquet", local.read_bytes())
    env = {**s3_env, **SMALL, "PIPELINE_DATA__SOURCE": uri}
    fetched = event(_ok(cli("data", "fetch", env=env)).stdout, "data.summary")
    assert fetched["path"].endswith("titanic.parquet") and fetched["cached"] is False


def _dead_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # closed again: connection refused


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"PIPELINE_DATA__SOURCE": "s3://pipeline-test/no/such/key.csv"}, "there is no object"),
        ({"PIPELINE_DATA__SOURCE": "s3://no-such-bucket-here/a.csv"}, "does not exist"),
        ({"AWS_SECRET_ACCESS_KEY": "wrong-secret-77a1"}, "(and AWS_SESSION_TOKEN, AWS_REGION)"),
        ({"AWS_ENDPOINT_URL": "dead"}, "no S3 server answers"),
        ({"PIPELINE_DATA__SOURCE": "s3://Bad_Bucket/a.csv"}, "no S3 object URI"),
        ({"PIPELINE_DATA__SOURCE": "s3://pipeline-test"}, "no S3 object URI"),
        # A prefix: "there is no object 'data'", a key the user never wrote.
        (
            {"PIPELINE_DATA__SOURCE": "s3://pipeline-test/data/"},
            "'s3://pipeline-test/data/' names a folder (a prefix), not an object",
        ),
    ],
)
def test_each_fault_of_an_s3_dataset_is_one_line_with_exit_5(
    cli: Any, s3_env: Mapping[str, str], store: Path, change: dict[str, str], named: str
) -> None:
    """Missing key or bucket, wrong credentials, a server down, a malformed URI: SourceError
    (exit 5, the dataset could not be fetched) naming what to fix; the local store is left
    without a cached dataset, and the secret key is in no output."""
    uri = _upload(f"data-{uuid.uuid4().hex[:8]}/titanic.csv", TITANIC_CSV.read_bytes())
    env = {**s3_env, "PIPELINE_STORE": str(store), "PIPELINE_DATA__SOURCE": uri}
    env.update(change)
    if env["AWS_ENDPOINT_URL"] == "dead":
        env.update(AWS_ENDPOINT_URL=_dead_endpoint(), PIPELINE_STORE_RETRIES="0")
    result = cli("data", "fetch", env=env)
    assert result.exit_code == 5, result.output
    assert named in one_error_line(result)
    assert env["AWS_SECRET_ACCESS_KEY"] not in result.stdout + result.stderr
    assert not (store / "datasets").exists() or not list((store / "datasets").iterdir())
