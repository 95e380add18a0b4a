"""The run-stage image end to end: built from a release, served, predicting, non-root, reproducible.

One image is built per session (tests/container/conftest.py) by docker/build.py from a fresh
store, exactly as `make docker-build` builds one; every request below is real HTTP from the host.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import REPO, event, run_cli
from tests.container.harness import (
    FIGURES,
    FIXTURE_CSV,
    REPOSITORY,
    Container,
    Image,
    host_env,
    http,
    start_serving,
    start_serving_on_host_network,
)

from pipeline.store import LocalStore, Store

# The cell values training reads as missing (PIPELINE_DATA__MISSING_VALUES' default).
MISSING = {"", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "#N/A", "-NaN", "-nan"}


def inspect(image: Image) -> dict[str, Any]:
    """The engine's `image inspect` document."""
    found = json.loads(image.engine.run("image", "inspect", image.tag).stdout)
    return found[0] if isinstance(found, list) else found


def records(columns: list[dict[str, str]], rows: int) -> list[dict[str, Any]]:
    """The first ``rows`` rows of the fixture CSV as JSON records typed by the served schema."""
    kinds = {c["name"]: c["kind"] for c in columns}
    out = []
    with FIXTURE_CSV.open(newline="") as fh:
        for row in csv.DictReader(fh):
            record: dict[str, Any] = {"Id": int(row["Id"])}
            for name, kind in kinds.items():
                value = row[name]
                if value in MISSING:
                    record[name] = None
                elif kind == "numeric":
                    record[name] = float(value)
                elif kind == "boolean":
                    record[name] = value.strip().lower() in ("true", "1", "yes")
                else:
                    record[name] = value
            out.append(record)
            if len(out) == rows:
                break
    return out


def host_predictions(image: Image, release: str) -> str:
    """`pipeline predict` of the fixture on the host, with the image's code: the CSV it writes."""
    env = host_env(image.store, PYTHONPATH=str(image.code))
    done = run_cli("predict", str(FIXTURE_CSV), "--release", release, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def run_once(image: Image, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`run --rm` the image with ``args`` (volumes, env, then the pipeline command)."""
    engine = image.engine
    # No health checks for one-shot commands (podman would also print that it cannot schedule
    # them without systemd, into the log stream this test parses).
    return engine.run(
        "run", "--rm", "--no-healthcheck", *engine.run_flags, *args, check=False, timeout=timeout
    )


def test_tag_and_labels_name_the_release(image: Image) -> None:
    """The tag is <repo>/<model>:<version>-<package id[:12]> and OCI labels carry the ids."""
    release = image.release
    version, package_id = release["version"], release["package_id"]
    assert image.tag == f"{REPOSITORY}/house-prices:{version}-{package_id[:12]}"
    config = inspect(image)["Config"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == version
    assert labels["io.pipeline.package-id"] == package_id
    assert labels["io.pipeline.build-id"] == release["build_id"]
    assert labels["io.pipeline.release"] == release["release"]
    # The commit checked out at build time: HEAD, or an ancestor if a commit landed since.
    revision = labels["org.opencontainers.image.revision"]
    ancestor = subprocess.run(
        ["git", "-C", str(REPO), "merge-base", "--is-ancestor", revision, "HEAD"], check=False
    )
    assert len(revision) == 40 and ancestor.returncode == 0, revision
    assert config["Entrypoint"] == ["pipeline"]
    assert config["Cmd"] == ["serve"]
    assert config["User"] == "10001:10001"
    assert f"PIPELINE_RELEASE={release['release']}" in config["Env"]


def test_image_is_not_multi_gigabyte(image: Image) -> None:
    """CPU torch only, no CUDA libraries, no build tools, no matplotlib or Ray: under 1.6 GB."""
    size = int(image.engine.run("image", "inspect", "--format", "{{.Size}}", image.tag).stdout)
    assert size < 1.6e9, f"image is {size / 1e9:.2f} GB"
    listing = run_once(
        image, "--entrypoint", "python", image.tag, "-c",
        "import importlib.metadata as m, torch; "
        "print(torch.__version__, sorted(d.metadata['Name'] for d in m.distributions()))",
    )  # fmt: skip
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.startswith("2.13.0+cpu "), listing.stdout[:200]
    assert "nvidia" not in listing.stdout.lower()
    # Run-stage processes never draw or search: the report and Ray extras stay out.
    assert "'matplotlib'" not in listing.stdout and "'ray'" not in listing.stdout


def test_serve_answers_health_model_and_predict(image: Image, served: Container) -> None:
    """/healthz, /v1/model and /v1/predict answer from the host; predictions match the host's."""
    status, body = http(f"{served.url}/healthz")
    assert (status, body) == (200, {"status": "ok"})

    status, model = http(f"{served.url}/v1/model")
    assert status == 200, model
    release = image.release
    assert model["name"] == "house-prices"
    assert model["version"] == release["version"]
    assert model["package_id"] == release["package_id"]
    assert model["build_id"] == release["build_id"]
    assert model["release"] == release["release"]
    assert model["metrics"], "the served model reports its test metrics"

    sent = records(model["input_schema"]["columns"], rows=25)
    status, body = http(f"{served.url}/v1/predict", {"records": sent})
    assert status == 200, body
    served_values = [p["prediction"] for p in body["predictions"]]
    assert len(served_values) == len(sent)

    host = list(csv.DictReader(io.StringIO(host_predictions(image, release["release"]))))
    expected = [float(row["prediction"]) for row in host[: len(sent)]]
    # The same float32 network on a 25-row batch versus 1,459-row chunks: sums are accumulated
    # in another order, so the last bits differ (about 1e-8 relative after the exp of the log).
    for got, want in zip(served_values, expected, strict=True):
        assert math.isclose(got, want, rel_tol=1e-6), (got, want)


def test_server_runs_as_non_root_and_is_healthy(image: Image, served: Container) -> None:
    """The serving process (PID 1) has a non-zero uid, and the image's HEALTHCHECK passes."""
    status = image.engine.run("exec", served.name, "cat", "/proc/1/status").stdout
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert uids and all(int(uid) != 0 for uid in uids), uids
    if image.engine.is_podman:
        check = image.engine.run("healthcheck", "run", served.name, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
    else:
        # Docker runs the check on its own schedule: the first one comes after --interval.
        deadline = time.monotonic() + 90
        health = ""
        while time.monotonic() < deadline and health != "healthy":
            time.sleep(2)
            health = image.engine.run(
                "inspect", "--format", "{{.State.Health.Status}}", served.name
            ).stdout.strip()
        assert health == "healthy"


def test_predict_in_container_on_mounted_file_matches_host(image: Image) -> None:
    """`pipeline predict` inside the container on a mounted CSV writes the host's exact bytes."""
    done = run_once(
        image, "--volume", f"{FIXTURE_CSV.parent}:/in:ro", image.tag,
        "predict", f"/in/{FIXTURE_CSV.name}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = event(done.stderr, "predict.summary")
    assert summary["release"] == image.release["release"]
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert len(rows) == 1459
    assert rows[0]["Id"] == "1461" and float(rows[0]["prediction"]) > 0
    assert done.stdout == host_predictions(image, image.release["release"])


def test_release_pulled_from_a_mounted_store_at_start(image: Image) -> None:
    """PIPELINE_RELEASE picks a release from a store mounted at start; SIGTERM stops it cleanly."""
    created = run_cli("release", "create", image.release["package_id"], env=host_env(image.store))
    assert created.returncode == 0, created.stderr
    second = event(created.stdout, "release.created")["release"]
    assert second != image.release["release"]

    container = start_serving(
        image,
        "--volume", f"{image.store}:/data/store:ro",
        "--env", f"PIPELINE_RELEASE={second}",
    )  # fmt: skip
    try:
        status, model = http(f"{container.url}/v1/model")
        assert status == 200, model
        assert model["release"] == second
        assert model["run"]["id_column"] is None  # v1 was released with Id, this one without

        started = time.monotonic()
        image.engine.run("stop", "--time", "30", container.name, timeout=60)
        stopped = time.monotonic() - started
        code = image.engine.run(
            "inspect", "--format", "{{.State.ExitCode}}", container.name
        ).stdout.strip()
        FIGURES["stop on SIGTERM s"] = f"{stopped:.1f}"
        # 137 would be SIGKILL after the grace period: the signal never reached pipeline.
        assert code == "0", f"exit code {code} after {stopped:.1f} s:\n{container.logs()}"
    finally:
        container.remove()


def test_release_pulled_from_an_object_store_by_url(
    image: Image, served: Container, s3_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The container sees only PIPELINE_STORE=s3://..., PIPELINE_RELEASE and the AWS_* variables
    (the secret passed by name, never on the command line): it pulls the release from the object
    store at start and serves the same predictions as the baked release."""
    s3 = s3_server.env(f"container-{uuid.uuid4().hex[:8]}")
    for name, value in s3.items():
        monkeypatch.setenv(name, value)
    store = Store.from_uri(s3["PIPELINE_STORE"], allow_http=True)
    local = LocalStore(image.store)
    for key in local.walk("packages"):  # what `aws s3 sync store/packages s3://.../packages` does
        store.write(key, local.read_bytes(key))
    created = run_cli(
        "release",
        "create",
        image.release["package_id"],
        env={**s3, "PIPELINE_LOG_FORMAT": "json", "PIPELINE_ENV_FILE": os.devnull,
             "PIPELINE_RUN__ID_COLUMN": "Id"},  # the run settings of the baked release
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    ref = event(created.stdout, "release.created")["release"]

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    names = [x for name in s3 if name != "PIPELINE_STORE" for x in ("--env", name)]
    container = start_serving_on_host_network(
        image, port, *names, "--env", f"PIPELINE_STORE={s3['PIPELINE_STORE']}",
        "--env", f"PIPELINE_RELEASE={ref}",
    )  # fmt: skip
    try:
        status, model = http(f"{container.url}/v1/model")
        assert status == 200, model
        assert model["release"] == ref and model["package_id"] == image.release["package_id"]
        rows = records(model["input_schema"]["columns"], 5)
        status, got = http(f"{container.url}/v1/predict", {"records": rows})
        assert status == 200, got
        status, baked = http(f"{served.url}/v1/predict", {"records": rows})
        assert status == 200, baked
        assert got["predictions"] == baked["predictions"] and len(got["predictions"]) == 5
        logs = container.logs()
        assert s3["AWS_SECRET_ACCESS_KEY"] not in logs
        inspected = image.engine.run("inspect", container.name).stdout
        assert s3["AWS_SECRET_ACCESS_KEY"] not in inspected.split('"Env"')[0]  # not in the argv
    finally:
        container.remove()


def test_build_in_container_has_the_host_build_id(image: Image, tmp_path: Path) -> None:
    """Training inside the container and on the host from the same inputs gives one build id."""
    inside = tmp_path / "inside"
    inside.mkdir()
    inside.chmod(0o777)  # the container's non-root user writes its store here
    same = {"PIPELINE_TRAIN__THREADS": "2", "PIPELINE_SEED": "42"}
    done = run_once(
        image, "--volume", f"{inside}:/work",
        "--env", "PIPELINE_STORE=/work/store",
        *[arg for key, value in same.items() for arg in ("--env", f"{key}={value}")],
        image.tag, "train", "--id-file", "/work/build.id",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:] or done.stdout[-3000:]
    container_id = (inside / "build.id").read_text().strip()

    host_store = tmp_path / "host-store"
    trained = run_cli(
        "train",
        "--id-file",
        str(tmp_path / "host.id"),
        env=host_env(host_store, PYTHONPATH=str(image.code), **same),
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    host_id = (tmp_path / "host.id").read_text().strip()

    def provenance(store: Path, build: str) -> dict[str, Any]:
        return json.loads((store / "builds" / build / "provenance.json").read_text())

    inner = provenance(inside / "store", container_id)["inputs"]
    outer = provenance(host_store, host_id)["inputs"]
    assert outer["code"] == inner["code"], (
        "the host ran other code than the image holds: src/pipeline changed during the build"
    )
    assert inner == outer
    assert container_id == host_id
