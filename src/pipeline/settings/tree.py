"""The settings tree: one typed section per concern, and the secrets it holds.

Every setting is a field with a default, a range and a description (which `pipeline config
show` and the README's table print). ``Settings.build_config`` is the part a build records and
its id covers; ``Settings.public`` is everything but the secrets.
"""

from __future__ import annotations

import copy
import itertools
import re
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from pipeline.settings.space import DEFAULT_SPACE, check_space

ENV_PREFIX = "PIPELINE_"
NESTED = "__"
# Variables that steer how settings are loaded rather than being settings themselves.
LOADER_VARS = ("PIPELINE_PRESET", "PIPELINE_CONFIG_DIR", "PIPELINE_ENV_FILE")

# pyarrow's defaults plus the spellings our datasets use. "NA" means "none" in several house-prices
# columns; reading it as missing is right because a missing category becomes its own bucket.
DEFAULT_MISSING = ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "#N/A", "-NaN", "-nan"]

# Bounds that keep a typo from reaching torch: more threads than this never helps a tabular MLP
# (and 100,000 cannot even be created); a layer wider than MAX_WIDTH, or hidden layers holding
# more than MAX_HIDDEN_WEIGHTS weights between them ([200000, 200000] would need 160 GB), is a
# slip of a digit rather than a model this tool is meant to train.
MAX_THREADS = 256
MAX_WIDTH = 8192
MAX_LAYERS = 16
MAX_HIDDEN_WEIGHTS = 1 << 26
MAX_MEMBERS = 64
# Seconds: a day. Beyond it the operating system's own timers overflow (socket timeouts do at
# about 1e11 s) and no request or shutdown should wait that long.
MAX_SECONDS = 86_400.0
# Package file names are <name>/<version>.tar.gz and <dist>-<version>-py3-none-any.whl: far
# below the 255 bytes a file name may have.
MAX_NAME_LENGTH = 64
MODEL_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")
# Semantic versioning 2.0 core with an optional pre-release (no build metadata: '+' in a file
# name invites trouble and semver ignores it for precedence anyway).
MODEL_VERSION_RE = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(-(0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(\.(0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*)?"
)
MODEL_NAME_RULE = (
    "expected lower-case letters, digits, '.', '_' or '-', starting with a letter or digit, "
    f"at most {MAX_NAME_LENGTH} characters"
)
MODEL_VERSION_RULE = (
    "expected a semantic version MAJOR.MINOR.PATCH with an optional -prerelease (1.2.0, "
    f"1.2.0-rc.1), at most {MAX_NAME_LENGTH} characters"
)


def _lower(value: Any) -> Any:
    """Choices are lower case, and `DEBUG` or `CSV` mean what `debug` and `csv` do."""
    return value.lower() if isinstance(value, str) else value


_Lower = BeforeValidator(_lower)
Task = Annotated[Literal["auto", "regression", "binary", "multiclass"], _Lower]
ColumnKind = Annotated[Literal["numeric", "categorical", "boolean"], _Lower]
Width = Annotated[int, Field(ge=1, le=MAX_WIDTH)]


class _Section(BaseModel):
    # Unknown keys in a preset or a JSON value are mistakes, not extensions. inf and NaN are
    # never a useful learning rate, timeout or bound (and are not JSON, which builds record).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DataSettings(_Section):
    """Where the dataset comes from and how to read it."""

    source: str = Field(
        "builtin://house-prices",
        description="Dataset URI: path, file://, http(s)://, s3://, kaggle://, builtin://",
    )
    format: Annotated[Literal["auto", "csv", "parquet"], _Lower] = Field(
        "auto", description="File format; auto decides from the name, then the bytes"
    )
    sha256: str | None = Field(
        None, description="Expected sha256 of the dataset bytes; a mismatch is an error"
    )
    target: str = Field("SalePrice", description="Column to predict")
    task: Task = Field("auto", description="auto, regression, binary or multiclass")
    drop: list[str] = Field(
        default_factory=lambda: ["Id"], description="Columns that are not features (ids, leaks)"
    )
    missing_values: list[str] = Field(
        default_factory=lambda: list(DEFAULT_MISSING), description="Cell values read as missing"
    )
    column_kinds: dict[str, ColumnKind] = Field(
        default_factory=dict,
        description='Per-column kind overrides as JSON, e.g. {"MSSubClass": "categorical"}',
    )
    delimiter: str = Field(",", min_length=1, max_length=1, description="CSV field delimiter")


class FeatureSettings(_Section):
    """How columns become tensors. Every statistic is fitted on training rows only."""

    min_frequency: int = Field(
        3, ge=1, description="Categories seen fewer times than this go to the unknown bucket"
    )
    max_embedding_dim: int = Field(
        16, ge=1, le=1024, description="Upper bound of an embedding's width"
    )
    log_skewed: bool = Field(
        True, description="log1p-transform non-negative numeric columns with a long right tail"
    )
    skew_threshold: float = Field(1.0, ge=0, description="Skewness above which log_skewed applies")
    scaling: Annotated[Literal["robust", "standard"], _Lower] = Field(
        "robust",
        description="Numeric scaling: robust (median, interquartile range) or standard (mean, std)",
    )
    smooth_clip: float = Field(
        1.5,
        ge=0,
        description=(
            "Scaled numeric values are smoothly clipped to +-this (x/sqrt(1+(x/c)^2)); 0: off"
        ),
    )
    max_categorical_cardinality: int = Field(
        1000, ge=2, description="Inferred text columns with more distinct values are refused"
    )


class ModelSettings(_Section):
    """The network, and the name and version its packages carry."""

    name: str = Field("house-prices", description="Model name used for packages and releases")
    version: str = Field("0.1.0", description="Semantic version of the packaged model")
    hidden: list[Width] = Field(
        default_factory=lambda: [256, 128],
        max_length=MAX_LAYERS,
        description="Widths of the hidden layers",
    )
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout after each hidden layer")
    members: int = Field(
        4,
        ge=1,
        le=MAX_MEMBERS,
        description="Ensemble members trained side by side and averaged (1: a single network)",
    )

    @field_validator("name")
    @classmethod
    def _file_name(cls, name: str) -> str:
        if len(name) > MAX_NAME_LENGTH or not MODEL_NAME_RE.fullmatch(name):
            raise PydanticCustomError("model_name", MODEL_NAME_RULE)
        return name

    @field_validator("version")
    @classmethod
    def _semantic_version(cls, version: str) -> str:
        if len(version) > MAX_NAME_LENGTH or not MODEL_VERSION_RE.fullmatch(version):
            raise PydanticCustomError("model_version", MODEL_VERSION_RULE)
        return version

    @field_validator("hidden")
    @classmethod
    def _fits_in_memory(cls, hidden: list[int]) -> list[int]:
        weights = sum(a * b for a, b in itertools.pairwise(hidden))
        if weights > MAX_HIDDEN_WEIGHTS:
            # A weight trains with its gradient and AdamW's two moments: 16 bytes in float32.
            raise PydanticCustomError(
                "too_many_weights",
                f"{weights:,} weights between hidden layers ({weights * 16 / 2**30:.1f} GiB to "
                f"train): at most {MAX_HIDDEN_WEIGHTS:,}; use narrower or fewer layers",
            )
        return hidden


class TrainSettings(_Section):
    """Optimisation, splits and early stopping."""

    learning_rate: float = Field(1e-3, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(1e-2, ge=0, description="AdamW decoupled weight decay")
    batch_size: int = Field(128, ge=1, description="Rows per optimisation step")
    max_epochs: int = Field(300, ge=1, description="Upper bound on epochs")
    patience: int = Field(30, ge=1, description="Epochs without validation gain before stopping")
    label_smoothing: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Classification: share of each target's probability spread over all classes",
    )
    val_fraction: float = Field(0.15, gt=0, lt=1, description="Share of rows for validation")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="Share of rows held out for test")
    target_transform: Annotated[Literal["auto", "none", "log", "log1p"], _Lower] = Field(
        "auto",
        description="Regression target transform; auto is log for a positive right-skewed target",
    )
    refit: bool = Field(
        True,
        description="After early stopping picks the epoch count, retrain on train+validation rows",
    )
    device: Annotated[Literal["cpu", "auto", "cuda"], _Lower] = Field(
        "cpu", description="cpu, or auto to use CUDA when present"
    )
    threads: int = Field(
        0,
        ge=0,
        le=MAX_THREADS,
        description="torch intra-op threads; 0: 1 for batches under 256 rows, else one per "
        "core (max 4)",
    )
    checkpoint_every: int = Field(
        0,
        ge=0,
        description="Also checkpoint every N epochs (0: only when stopped by SIGTERM/SIGINT)",
    )

    @model_validator(mode="after")
    def _rows_left_to_train(self) -> Self:
        total = self.val_fraction + self.test_fraction
        if total >= 1:
            # ``fields`` lets the loader name both settings and where each value came from.
            raise PydanticCustomError(
                "no_rows_to_train",
                f"validation {self.val_fraction:g} + test {self.test_fraction:g} = {total:g} of "
                "the rows leaves none to train on: the two must add up to less than 1 (the "
                "defaults are 0.15 and 0.2)",
                {"fields": ("val_fraction", "test_fraction")},
            )
        return self


class TuneSettings(_Section):
    """`pipeline tune`: the search space and how the search runs (on Ray)."""

    trials: int = Field(16, ge=1, le=10_000, description="Configurations tried (--trials)")
    space: dict[str, Any] = Field(
        default_factory=lambda: copy.deepcopy(DEFAULT_SPACE),
        description='Setting path to dimension as JSON, e.g. {"train.learning_rate": '
        '{"loguniform": [0.0003, 0.01]}}; replaces the default space',
    )
    metric: Annotated[
        Literal["auto", "rmse", "rmse_log", "mae", "r2", "accuracy", "log_loss", "f1_macro",
                "roc_auc"],
        _Lower,
    ] = Field(
        "auto",
        description="Validation metric that ranks trials; auto: rmse_log (log target) or rmse, "
        "log_loss for classification",
    )  # fmt: skip
    scoring: Annotated[Literal["auto", "cv", "validation"], _Lower] = Field(
        "auto",
        description="How a trial is scored on the training rows: cv (K-fold of train+validation), "
        "validation (the split train uses); auto: cv up to 10,000 rows",
    )
    folds: int = Field(5, ge=2, le=20, description="K of the cv scoring")
    concurrency: int = Field(
        0, ge=0, le=4096, description="Trials at a time; 0: as many as the cluster has CPUs"
    )
    cpus_per_trial: int = Field(
        1, ge=1, le=MAX_THREADS, description="CPUs (and torch threads) each trial holds"
    )
    time_budget: float | None = Field(
        None,
        gt=0,
        le=MAX_SECONDS * 30,
        description="Seconds after which no new trial starts (the result then depends on speed)",
    )
    connect_timeout: float = Field(
        30.0, gt=0, le=MAX_SECONDS, description="Seconds to reach the Ray cluster at RAY_ADDRESS"
    )

    @field_validator("space")
    @classmethod
    def _valid_space(cls, space: dict[str, Any]) -> dict[str, Any]:
        sections = {"features": FeatureSettings, "model": ModelSettings, "train": TrainSettings}
        return check_space(space, sections)  # type: ignore[arg-type]


class GateSettings(_Section):
    """Quality gates checked by `pipeline evaluate`; unset gates are not checked."""

    min_r2: float | None = Field(None, description="Fail when test R² is below this")
    max_rmse: float | None = Field(None, description="Fail when test RMSE is above this")
    max_rmse_log: float | None = Field(None, description="Fail when test RMSE of log is above")
    max_mae: float | None = Field(None, description="Fail when test MAE is above this")
    min_accuracy: float | None = Field(None, description="Fail when test accuracy is below this")
    min_f1_macro: float | None = Field(None, description="Fail when test macro F1 is below this")
    min_roc_auc: float | None = Field(None, description="Fail when test ROC AUC is below this")
    max_log_loss: float | None = Field(None, description="Fail when test log loss is above this")


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
        default_factory=list, description="Names (never values) of secrets the run stage needs"
    )
    # Like chunk_rows it sizes the work for the machine it runs on: never taken from a release.
    workers: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="predict on Ray with this many workers (--workers); unset: in this process",
    )


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
        None, description="Bearer token that /v1/* requires when set (a secret)"
    )
    threads: int = Field(
        1, ge=1, le=MAX_THREADS, description="torch intra-op threads of each inference"
    )
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


class Settings(BaseSettings):
    """The whole configuration of a run."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED,
        case_sensitive=False,
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        allow_inf_nan=False,
    )

    seed: int = Field(42, ge=0, description="The one seed behind every random choice")
    store: str = Field(
        "./store", description="Artifact store: a folder path, file:// URI or s3://bucket/prefix"
    )
    store_timeout: float = Field(
        30.0, gt=0, le=MAX_SECONDS, description="Seconds an s3:// store request may take"
    )
    store_retries: int = Field(
        3, ge=0, le=20, description="Retries of a failed s3:// store request (5xx, connection)"
    )
    log_format: Annotated[Literal["auto", "json", "console"], _Lower] = Field(
        "auto", description="auto is console on a terminal, JSON lines otherwise"
    )
    log_level: Annotated[Literal["debug", "info", "warning", "error"], _Lower] = Field(
        "info", description="Lowest level written"
    )
    http_timeout: float = Field(
        30.0, gt=0, le=MAX_SECONDS, description="Seconds before an HTTP fetch gives up"
    )
    kaggle_timeout: float = Field(
        60.0,
        gt=0,
        le=MAX_SECONDS,
        description="Seconds a Kaggle request may wait for the server before failing",
    )
    data: DataSettings = Field(default_factory=DataSettings)  # type: ignore[arg-type]
    features: FeatureSettings = Field(default_factory=FeatureSettings)  # type: ignore[arg-type]
    model: ModelSettings = Field(default_factory=ModelSettings)  # type: ignore[arg-type]
    train: TrainSettings = Field(default_factory=TrainSettings)  # type: ignore[arg-type]
    tune: TuneSettings = Field(default_factory=TuneSettings)  # type: ignore[arg-type]
    gates: GateSettings = Field(default_factory=GateSettings)  # type: ignore[arg-type]
    run: RunSettings = Field(default_factory=RunSettings)  # type: ignore[arg-type]
    serve: ServeSettings = Field(default_factory=ServeSettings)  # type: ignore[arg-type]
    release: str | None = Field(
        None, description="Release the run stage uses: name@vN or name@current"
    )
    # The Ray cluster that `tune` (and distributed work) attaches to; unset: an embedded runtime.
    ray_address: str | None = Field(
        None,
        validation_alias=AliasChoices("RAY_ADDRESS"),
        description="Ray cluster address (host:port, ray://host:port or auto); unset: embedded",
    )

    # Credentials keep the names their own tools use; they are secrets and never leave memory.
    kaggle_username: str | None = Field(
        None, validation_alias=AliasChoices("KAGGLE_USERNAME"), description="Kaggle user"
    )
    kaggle_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("KAGGLE_KEY"), description="Kaggle API key"
    )
    kaggle_api_token: SecretStr | None = Field(
        None, validation_alias=AliasChoices("KAGGLE_API_TOKEN"), description="Kaggle token"
    )
    # Where the kaggle client looks for credential files (read to tell a missing login early).
    kaggle_config_dir: str | None = Field(
        None,
        validation_alias=AliasChoices("KAGGLE_CONFIG_DIR"),
        description="Folder holding kaggle.json",
    )
    xdg_config_home: str | None = Field(
        None,
        validation_alias=AliasChoices("XDG_CONFIG_HOME"),
        description="Base folder of user config (kaggle looks in its kaggle/)",
    )

    # The client reads the other AWS_* variables itself, but not this one once timeouts are
    # given to it, so it is passed on from here.
    aws_allow_http: bool = Field(
        False,
        validation_alias=AliasChoices("AWS_ALLOW_HTTP"),
        description="Allow an http:// AWS_ENDPOINT_URL (s3:// stores; a local test server)",
    )
    # An s3:// store's secrets: the client library reads them from the environment itself;
    # they are declared here so that they are masked in every message like the others.
    aws_secret_access_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("AWS_SECRET_ACCESS_KEY"),
        description="S3 secret key (s3:// stores)",
    )
    aws_session_token: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("AWS_SESSION_TOKEN"),
        description="S3 session token (s3:// stores)",
    )

    # Where each value came from, as a message names it ("env var PIPELINE_TRAIN__DEVICE",
    # "option --device", "preset config/titanic.toml", ".env line 3 (PIPELINE_SEED)"); ``load``
    # fills it, settings built in code leave it empty. (Private, so never dumped or recorded.)
    _sources: dict[tuple[str, ...], str] = PrivateAttr(default_factory=dict)

    def source_of(self, *path: str) -> str:
        """Where the value at ``path`` (e.g. ``"train", "device"``) came from, for a message."""
        env = ALIASED_ENV.get(path[-1]) or ENV_PREFIX + NESTED.join(path).upper()
        return self._sources.get(path) or env

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only explicit values: ``load`` reads every layer itself, so it can say where each
        value came from and catch unknown names before pydantic-settings sees them."""
        return (init_settings,)

    def store_options(self) -> dict[str, Any]:
        """What ``Store.from_uri`` needs besides the URI: an object store's request timeout,
        retries and whether its endpoint may be plain http."""
        return {
            "timeout": self.store_timeout,
            "retries": self.store_retries,
            "allow_http": self.aws_allow_http,
        }

    def build_config(self) -> dict[str, Any]:
        """The settings that shape a trained model: what a build records and its id covers.

        Operational knobs (store, logging, timeouts, gates, device, threads) and the package
        name/version are left out: they do not change what is learned, and if the device or
        thread count did change the weights, the weights' own digest changes the id.
        """
        pub = self.public()
        return {
            "seed": pub["seed"],
            "data": pub["data"],
            "features": pub["features"],
            "model": {k: pub["model"][k] for k in ("hidden", "dropout")},
            "train": {k: v for k, v in pub["train"].items() if k not in _OPERATIONAL_TRAIN},
        }

    def public(self) -> dict[str, Any]:
        """The non-secret settings as plain JSON-able data (what manifests record)."""
        exclude: dict[str, Any] = {name: True for name in SECRET_FIELDS}
        for *section, name in SECRET_PATHS:
            exclude.setdefault(section[0], {})[name] = True
        return self.model_dump(mode="json", exclude=exclude)


# Train settings that change how a run executes, never what it learns (so not in the id).
_OPERATIONAL_TRAIN = ("device", "threads", "checkpoint_every")
SECRET_FIELDS = (
    "kaggle_username", "kaggle_key", "kaggle_api_token", "aws_secret_access_key",
    "aws_session_token",
)  # fmt: skip
# Secrets inside a section, by path.
SECRET_PATHS = (("serve", "token"),)
# Command-line options that set a setting (train --device, serve --host/--port), so that a
# message names the option the user typed rather than the variable it stands for.
CLI_OPTIONS = {"PIPELINE_TRAIN__DEVICE": "--device", "PIPELINE_SERVE__HOST": "--host",
               "PIPELINE_SERVE__PORT": "--port", "PIPELINE_RUN__WORKERS": "--workers"}  # fmt: skip
ALIASED_ENV = {"ray_address": "RAY_ADDRESS",
               "kaggle_username": "KAGGLE_USERNAME", "kaggle_key": "KAGGLE_KEY",
               "kaggle_api_token": "KAGGLE_API_TOKEN", "kaggle_config_dir": "KAGGLE_CONFIG_DIR",
               "xdg_config_home": "XDG_CONFIG_HOME",
               "aws_allow_http": "AWS_ALLOW_HTTP",
               "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
               "aws_session_token": "AWS_SESSION_TOKEN"}  # fmt: skip
