"""Distinctive secret values, set for every command, appear in no byte any command writes."""

from __future__ import annotations

import io
import tarfile
import typing
import zipfile
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr
from tests.conftest import REPO, event, events

from pipeline.settings import ALIASED_ENV, ENV_PREFIX, NESTED, Settings

FIXTURE = REPO / "tests" / "fixtures" / "house-prices-test.csv"
URL_PASSWORD = "pw-in-url-5cf1d2e8"


def secret_env_names(model: type[BaseModel] = Settings, prefix: str = ENV_PREFIX) -> list[str]:
    """The env name of every SecretStr setting, found by walking the settings tree."""
    names = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += secret_env_names(annotation, f"{prefix}{name.upper()}{NESTED}")
        elif SecretStr in (annotation, *typing.get_args(annotation)):
            names.append(ALIASED_ENV.get(name) or f"{prefix}{name.upper()}")
    return names


def _recording(cli: Any, env: dict[str, str], outputs: list[str]) -> Any:
    """``run(*args, code=0, **extra)``: the CLI with ``env`` (and ``extra``), its stdout and
    stderr kept in ``outputs`` to be searched, its exit code asserted."""

    def run(*args: str, code: int = 0, **extra: str) -> Any:
        result = cli(*args, env={**env, **extra})
        outputs.extend([result.stdout, result.stderr])
        assert result.exit_code == code, (args, result.stdout[-1500:], result.stderr)
        return result

    return run


def test_the_walk_finds_the_known_secrets() -> None:
    """The settings walk sees the Kaggle and S3 credentials (so a new SecretStr is covered)."""
    assert {"KAGGLE_KEY", "KAGGLE_API_TOKEN"} <= set(secret_env_names())
    assert {"AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} <= set(secret_env_names())


def _expand(path: Path) -> list[tuple[str, bytes]]:
    """A file's bytes, plus every member of it when it is an archive (compressed bytes hide)."""
    data = path.read_bytes()
    found = [(str(path), data)]
    if path.name.endswith(".tar.gz"):
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member in tar.getmembers():
                extracted = tar.extractfile(member)
                if extracted is not None:
                    found.append((f"{path}!{member.name}", extracted.read()))
    elif path.suffix == ".whl":
        with zipfile.ZipFile(io.BytesIO(data)) as wheel:
            found += [(f"{path}!{n}", wheel.read(n)) for n in wheel.namelist()]
    return found


def test_no_secret_reaches_output_logs_errors_store_or_packages(
    cli: Any, store: Path, tmp_path: Path
) -> None:
    """Every command runs with every secret set; stdout, stderr, the whole store (archives
    opened), the predictions and --id-files are searched for each value."""
    secrets = {name: f"s3cr3t-{name.lower()}-a91f0c" for name in secret_env_names()}
    secrets["KAGGLE_USERNAME"] = "kaggle-user-7d2e41"
    env = {
        **secrets,
        "PIPELINE_TRAIN__MAX_EPOCHS": "4",
        "PIPELINE_RUN__REQUIRED_SECRETS": '["KAGGLE_KEY"]',
    }
    outputs: list[str] = []
    run = _recording(cli, env, outputs)

    run("config", "show")
    run("data", "fetch")
    run("train", "--id-file", str(tmp_path / "build.id"))
    run("evaluate", "--folds", "2")
    packaged = run("package", "--format", "wheel", "--id-file", str(tmp_path / "package.id"))
    package_id = event(packaged.stdout, "package.summary")["package_id"]
    run("release", "create", package_id, "--id-file", str(tmp_path / "release.id"))
    run("release", "create", package_id)
    run("release", "rollback")
    run("release", "list")
    run("release", "show", "house-prices@current")
    run("predict", "--release", "house-prices@current", str(FIXTURE), "-o", str(tmp_path / "p.csv"))
    run("predict", "--release", "house-prices@v1", str(FIXTURE))  # predictions on stdout
    # Failures print their message: a URL with a password in it must come out redacted.
    run(
        "data",
        "fetch",
        code=5,
        PIPELINE_DATA__SOURCE=f"http://someone:{URL_PASSWORD}@127.0.0.1:9/data.csv",
        PIPELINE_HTTP_TIMEOUT="2",
    )
    run("train", code=3, PIPELINE_TRAIN__MAX_EPOCS="4")  # a typo'd setting: did-you-mean message

    written = [p for p in [*store.rglob("*"), *tmp_path.glob("*")] if p.is_file()]
    assert any(p.name.endswith(".whl") for p in written) and (tmp_path / "p.csv").is_file()
    blobs = [("output", text.encode()) for text in outputs]
    for path in written:
        blobs += _expand(path)
    for value in [*secrets.values(), URL_PASSWORD]:
        leaks = [where for where, data in blobs if value.encode() in data]
        assert not leaks, f"{value} found in {leaks}"
    # The release records which secrets it needs by name only.
    assert any(b"KAGGLE_KEY" in data for where, data in blobs if "releases" in where)


SECTION_SECRET = "s3cr3t-in-a-section-77a1"


@pytest.mark.parametrize(
    ("env", "dotenv", "preset"),
    [
        pytest.param({"PIPELINE_SERVE": f'{{"token": "{SECTION_SECRET}",}}'}, "", "", id="comma"),
        pytest.param({"PIPELINE_SERVE": f'{{"token": "{SECTION_SECRET}"'}, "", "", id="unclosed"),
        pytest.param({"PIPELINE_SERVE": f'{{"tokn": "{SECTION_SECRET}"}}'}, "", "", id="misspelt"),
        pytest.param({"PIPELINE_SERVE": '{"token": 918273645}'}, "", "", id="number"),
        pytest.param({"PIPELINE_SERVE": f'"{SECTION_SECRET}"'}, "", "", id="not-an-object"),
        pytest.param({"PIPELINE_SERVE": f'["{SECTION_SECRET}"]'}, "", "", id="a-list"),
        pytest.param({"PIPELINE_SERVE": f'{{"port": "{SECTION_SECRET}"}}'}, "", "", id="wrong-key"),
        pytest.param(
            {"PIPELINE_DATA": f'{{"kaggle_key": "{SECTION_SECRET}",}}'},
            "",
            "",
            id="key-in-another-section-malformed",
        ),
        pytest.param(
            {"PIPELINE_DATA": f'{{"kaggle_key": "{SECTION_SECRET}"}}'},
            "",
            "",
            id="key-in-another-section",
        ),
        pytest.param(
            {"PIPELINE_SERVE": f'{{"token": "{SECTION_SECRET}", "port": "x"}}'},
            "",
            "",
            id="beside-a-bad-port",
        ),
        pytest.param(
            {}, f'PIPELINE_SERVE={{"tokn": "{SECTION_SECRET}"}}\n', "", id="dotenv-misspelt"
        ),
        pytest.param({}, f'KAGGLE_KEY="{SECTION_SECRET}\n', "", id="dotenv-broken-line"),
        pytest.param({}, f"KAGGLE_KEY {SECTION_SECRET}\n", "", id="dotenv-no-equals"),
        pytest.param({}, "", f'kaggle_key = "{SECTION_SECRET}"\n', id="preset-kaggle-key"),
        pytest.param({}, "", f'[serve]\ntoken = "{SECTION_SECRET}"\n', id="preset-token"),
        pytest.param({}, "", f'[serve]\ntokn = "{SECTION_SECRET}"\n', id="preset-misspelt"),
    ],
)
def test_no_secret_in_the_error_for_a_malformed_or_misspelt_section(
    cli: Any, tmp_path: Path, env: dict[str, str], dotenv: str, preset: str
) -> None:
    """A secret in malformed JSON, under a misspelt key, given as a number, in a broken .env line
    or in a preset is refused (exit 3, one line) without its value on stderr or in the event."""
    extra = dict(env)
    if dotenv:
        (tmp_path / "secret.env").write_text(dotenv)
        extra["PIPELINE_ENV_FILE"] = str(tmp_path / "secret.env")
    if preset:
        (tmp_path / "secret.toml").write_text(preset)
        extra["PIPELINE_PRESET"] = str(tmp_path / "secret.toml")
    result = cli("config", "show", "--format", "json", env=extra)
    assert result.exit_code == 3, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert [e["kind"] for e in events(result.stdout) if e.get("event") == "error"] == ["config"]
    for value in (SECTION_SECRET, "918273645"):
        assert value not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("env", "code"),
    [
        ({"PIPELINE_DATA__SOURCE": f"s3://AKIAEXAMPLE:{URL_PASSWORD}@bucket/train.csv"}, 5),
        ({"PIPELINE_STORE": f"s3://AKIAEXAMPLE:{URL_PASSWORD}@bucket/prefix"}, 3),
    ],
)
def test_credentials_written_into_an_s3_uri_are_not_repeated(
    cli: Any, env: dict[str, str], code: int
) -> None:
    """A key pair written into an s3:// URI (a common slip) is refused without repeating it:
    the one-line error and its event show the URI as s3://***@bucket/... (they printed it
    whole)."""
    result = cli("train", env=env)
    assert result.exit_code == code, result.output
    assert "s3://***@bucket/" in result.stderr
    assert URL_PASSWORD not in result.stdout + result.stderr


def test_uris_are_shown_without_user_info_or_secret_parameters() -> None:
    """``redact_uri``, which every dataset URI in a message, an event or a manifest passes
    through: user info and credential-like parameters are masked for every scheme, and a URI
    without them is kept as written."""
    from pipeline.data.sources import redact_uri

    assert redact_uri("s3://AK:p@ss@bucket/x.csv") == "s3://***@bucket/x.csv"
    assert redact_uri("s3://b/x.csv?secret=abc&versionId=1") == (
        "s3://b/x.csv?secret=%2A%2A%2A&versionId=1"
    )
    for kept in ("s3://b/x y.csv?versionId=a b", "/data/a@b.csv", "file:///d/a@b/c.csv"):
        assert redact_uri(kept) == kept
    assert redact_uri("https://u:p@h/x?token=1") == "https://***@h/x?token=%2A%2A%2A"


URL_TOKEN = "tok-in-query-93be07aa"


def test_credentials_in_a_source_url_reach_no_build_package_report_or_message(
    cli: Any, store: Path, tmp_path: Path
) -> None:
    """A dataset URL carrying a password and a token, served by a real HTTP server: the build's
    config.json, its package, `config show`, the report, `diff` and every event show it masked,
    `evaluate` still fetches it with today's credentials, and a masked URL fed back (as a
    preset written by `tune` records it) is a one-line error rather than a failed download.
    Credentials in a store URI or an unknown scheme are masked in the error as well."""
    import functools
    import http.server
    import shutil
    import threading

    shutil.copy(REPO / "src" / "pipeline" / "datasets" / "house-prices.csv", tmp_path / "train.csv")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *_: Any) -> None:  # the server's access log is not the tool's
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True).start()
    port = httpd.server_address[1]
    source = f"http://reader:{URL_PASSWORD}@127.0.0.1:{port}/train.csv?token={URL_TOKEN}&v=1"
    env = {"PIPELINE_DATA__SOURCE": source, "PIPELINE_TRAIN__MAX_EPOCHS": "3"}
    outputs: list[str] = []
    run = _recording(cli, env, outputs)

    try:
        run("config", "show", "--format", "json")
        build = event(run("train").stdout, "train.summary")["build_id"]
        run("evaluate", build)
        run("package", build)
        run("report", build, "-o", str(tmp_path / "report.html"))
        run("diff", build, build, "--all", "--format", "json")
        masked = f"http://***@127.0.0.1:{port}/train.csv?token=%2A%2A%2A&v=1"
        config = (store / "builds" / build / "config.json").read_text()
        assert masked in config
        refused = run("train", code=5, PIPELINE_DATA__SOURCE=masked)
        assert "credentials masked" in refused.stderr and len(refused.stderr.splitlines()) == 1
    finally:
        httpd.shutdown()
        httpd.server_close()
    # The server gone and no credentials today: the build's pinned bytes are in the store's
    # cache, so `evaluate` needs neither (it was exit 5, "credentials masked").
    run("evaluate", build, PIPELINE_DATA__SOURCE="builtin://house-prices")
    for extra, code in (
        ({"PIPELINE_DATA__SOURCE": f"ftp://reader:{URL_PASSWORD}@host/x.csv"}, 5),
        ({"PIPELINE_STORE": f"file://reader:{URL_PASSWORD}@host/{tmp_path}/s"}, 3),
    ):
        run("train", code=code, **extra)
    blobs = [("output", text.encode()) for text in outputs]
    for path in [*store.rglob("*"), tmp_path / "report.html"]:
        if path.is_file():
            blobs += _expand(path)
    for value in (URL_PASSWORD, URL_TOKEN):
        leaks = [where for where, data in blobs if value.encode() in data]
        assert not leaks, f"{value} found in {leaks}"
