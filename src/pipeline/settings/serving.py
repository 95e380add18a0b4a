"""The sections of the settings tree that the run stage reads: ``run`` (how `pipeline predict`
and `pipeline serve` use a release) and ``serve`` (the HTTP server; operational, never recorded).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_core import PydanticCustomError

from pipeline.settings.sections import MAX_SECONDS, MAX_THREADS, _Lower, _Section


class RunSettings(_Section):
    """How the run stage (predict, serve) uses a release; recorded in each release."""

    threshold: float = Field(
        0.5, gt=0, lt=1, description="Binary models predict the positive class at or above this"
    )
    output_format: Annotated[Literal["auto", "csv", "parquet", "jsonl"], _Lower] = Field(
        "auto", description="Prediction file format; auto follows the output file's suffix"
    )
    chunk_rows: int = Field(
        100_000,
        ge=1,
        le=100_000_000,
        description="Rows per prediction chunk: bounds memory whatever the input",
    )
    id_column: str | None = Field(
        None, description="Input column copied unchanged into the predictions (e.g. Id)"
    )
    on_error: Annotated[Literal["fail", "column"], _Lower] = Field(
        "fail", description="A bad row fails the batch, or gets a message in an error column"
    )
    required_secrets: list[str] = Field(
        default_factory=list,
        description="Names (never values) of secrets the run stage needs: `predict` and "
        "`serve` refuse to start (exit 3) while one is unset",
    )

    @field_validator("required_secrets")
    @classmethod
    def _variable_names(cls, names: list[str]) -> list[str]:
        # A name no environment can hold ("a=b", "", "MY KEY") made the release unrunnable.
        # Not shown: such an entry may be the secret itself, pasted where its name goes.
        bad = [i for i, n in enumerate(names, 1) if not n.isidentifier() or not n.isascii()]
        if bad:
            raise PydanticCustomError(
                "bad_secret_name",
                f"entry {', '.join(map(str, bad))} of {len(names)} is no environment variable "
                "name: expected names of letters, digits and '_' (e.g. KAGGLE_KEY), never values",
            )
        return names

    @field_validator("id_column")
    @classmethod
    def _not_an_output_column(cls, name: str | None) -> str | None:
        if name is not None and not name.strip():
            # An empty variable was recorded in the release as id column "", which no file has.
            raise PydanticCustomError(
                "id_column_empty",
                "is empty: name the input column to copy into the predictions (e.g. Id)",
            )
        # The predictions' own columns (pipeline.outputs): the id would be overwritten.
        if name is not None and (
            name in ("prediction", "error") or name.startswith("probability_")
        ):
            raise PydanticCustomError(
                "id_column_clash",
                f"'{name}' is a column the predictions write (prediction, error, "
                "probability_<class>): the id would be lost; copy the id under another name",
            )
        return name

    # Like chunk_rows it sizes the work for the machine it runs on: never taken from a release.
    workers: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="predict on Ray with this many workers (--workers); unset: in this process",
    )

    def released(self) -> dict[str, Any]:
        """What a release records and fixes: every setting but ``MACHINE_RUN``, which always
        comes from the environment of the machine a process runs on."""
        return self.model_dump(mode="json", exclude=set(MACHINE_RUN))


# Run settings that size the work for the machine (memory, Ray workers): never released.
MACHINE_RUN = ("chunk_rows", "workers")


class ServeSettings(_Section):
    """The HTTP server of `pipeline serve`: operational, never recorded in a build or release."""

    host: str = Field("0.0.0.0", description="Interface to bind; 0.0.0.0 is every interface")  # noqa: S104
    port: int = Field(
        8080, ge=0, le=65535, description="TCP port (0 picks a free one); unset, PORT is used"
    )
    max_body_bytes: int = Field(
        10 * 1024 * 1024, ge=1, description="Largest request body accepted; larger gets 413"
    )
    token: SecretStr | None = Field(
        None,
        description="Bearer token that /v1/* requires when set (a secret); set empty or to "
        "spaces (a secret that was not injected) is exit 3, not an open server",
    )
    threads: int = Field(
        1, ge=1, le=MAX_THREADS, description="torch intra-op threads of each inference"
    )

    @field_validator("token", mode="before")
    @classmethod
    def _token_not_blank(cls, token: Any) -> Any:
        # `PIPELINE_SERVE__TOKEN=$TOKEN` with the secret not injected served /v1/* to anyone.
        value = token.get_secret_value() if isinstance(token, SecretStr) else token
        if isinstance(value, str) and not value.strip():
            raise PydanticCustomError(
                "token_blank",
                "is empty (or only spaces): serve would answer every request; set the token, "
                "or unset the variable to serve without one",
            )
        return token

    concurrency: int = Field(
        0,
        ge=0,
        le=MAX_THREADS,
        description="Inferences run at once; 0 means one per available core",
    )
    graceful_timeout: int = Field(
        30,
        ge=1,
        le=MAX_SECONDS,
        description="Seconds SIGTERM waits for in-flight requests before cancelling",
    )
    drain_seconds: float = Field(
        0.0,
        ge=0,
        le=MAX_SECONDS,
        description="Seconds after SIGTERM that /readyz says 503 while still serving",
    )
    batch_rows: int = Field(
        1024,
        ge=1,
        le=1_000_000,
        description="Most rows of concurrent JSON requests scored in one pass (micro-batching; "
        "it never waits for a batch to fill)",
    )
    queue_rows: int = Field(
        100_000,
        ge=1,
        le=100_000_000,
        description="Rows waiting to be scored beyond which a request gets 503",
    )
    deadline: float = Field(
        30.0, gt=0, le=MAX_SECONDS, description="Seconds a request may wait for its scores (504)"
    )
    body_timeout: float = Field(
        30.0, gt=0, le=MAX_SECONDS, description="Seconds a request's body may take to arrive (408)"
    )
    header_timeout: float = Field(
        30.0,
        gt=0,
        le=MAX_SECONDS,
        description="Seconds a request's line and headers may take to arrive, from the "
        "connection opening or the request's first byte (408, or closed when nothing came)",
    )
    max_header_bytes: int = Field(
        65536,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Largest request line and headers accepted; larger gets 431",
    )
    inflight_bytes: int = Field(
        0,
        ge=0,
        description="Request bytes read, parsed and scored at once; beyond it a request gets "
        "503; 0: four times max_body_bytes",
    )
    access_log_sample: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Fraction of successful requests written to the access log (spread evenly); "
        "refused and failed requests are always logged",
    )
    workers: int = Field(
        0,
        ge=0,
        le=MAX_THREADS,
        description="Server processes sharing the port; 0: one per available core",
    )
    max_connections: int = Field(
        0,
        ge=0,
        le=1_000_000,
        description="Connections held at once, more are answered 503 and closed; 0: the "
        "open-file limit less 64",
    )
