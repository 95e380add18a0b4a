"""The sections of the settings tree that shape and judge a model: data, features, model,
train, tune and gates, with the bounds and validators they share.

Every setting is a field with a default, a range and a description (which `pipeline config
show` and the README's table print). ``serving`` holds the run stage's sections; ``tree``
composes all of them into ``Settings``.
"""

from __future__ import annotations

import copy
import itertools
import re
import typing
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from pipeline.settings import columns
from pipeline.settings.space import DEFAULT_SPACE, check_space, dotted
from pipeline.settings.uris import parsable_uri

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


def _folds(value: Any) -> Any:
    """``train.bag_folds``: auto, 0 (off) or 2 to 20, in one message (not one per type)."""
    text = str(value).strip().lower()
    if text == "auto":
        return text
    if not isinstance(value, bool) and text.isdigit() and (int(text) == 0 or 2 <= int(text) <= 20):
        return int(text)
    raise PydanticCustomError("bag_folds", "expected auto, 0 (no bagging) or 2 to 20 folds")


Task = Annotated[Literal["auto", "regression", "binary", "multiclass"], _Lower]
ColumnKind = Annotated[Literal["numeric", "categorical", "boolean"], _Lower]
Width = Annotated[int, Field(ge=1, le=MAX_WIDTH)]


def refuse_bool(model: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
    """``value`` unless it is a true/false (or a list holding one) for a setting that is not a
    switch: pydantic reads True as 1, so a preset's ``max_epochs = true`` trained one epoch.
    Text from the environment is not affected (``"true"`` is no integer either way)."""
    name = info.field_name
    if name is None or _admits_bool(model.model_fields[name].annotation):
        return value
    if isinstance(value, bool) or (isinstance(value, list) and any(type(v) is bool for v in value)):
        raise PydanticCustomError("bool_for_number", "true/false is not a value for this setting")
    return value


def _admits_bool(annotation: Any) -> bool:
    return annotation is bool or any(_admits_bool(a) for a in typing.get_args(annotation))


class _Section(BaseModel):
    # Unknown keys in a preset or a JSON value are mistakes, not extensions. inf and NaN are
    # never a useful learning rate, timeout or bound (and are not JSON, which builds record).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _not_a_bool(cls, value: Any, info: ValidationInfo) -> Any:
        return refuse_bool(cls, value, info)


class DataSettings(_Section):
    """Where the dataset comes from and how to read it."""

    source: str = Field(
        "builtin://house-prices",
        min_length=1,
        description="Dataset URI: path, file://, http(s)://, s3://, kaggle://, builtin://",
    )
    format: Annotated[Literal["auto", "csv", "parquet"], _Lower] = Field(
        "auto", description="File format; auto decides from the name, then the bytes"
    )
    sha256: str | None = Field(
        None, description="Expected sha256 of the dataset bytes; a mismatch is an error"
    )
    target: str = Field("SalePrice", min_length=1, description="Column to predict")
    task: Task = Field("auto", description="auto, regression, binary or multiclass")
    drop: list[str] = Field(
        default_factory=lambda: ["Id"], description="Columns that are not features (ids, leaks)"
    )
    missing_values: list[str] = Field(
        default_factory=lambda: list(DEFAULT_MISSING),
        description='Cell values read as missing; a list set here replaces this one: keep "" '
        'and "NA" in it where the data uses them',
    )
    column_kinds: dict[str, ColumnKind] = Field(
        default_factory=dict,
        description='Per-column kind overrides as JSON, e.g. {"MSSubClass": "categorical"}',
    )
    delimiter: str = Field(
        ",", min_length=1, max_length=1, description=r"CSV field delimiter (a tab: \t or tab)"
    )

    @field_validator("delimiter", mode="before")
    @classmethod
    def _tab(cls, value: Any) -> Any:
        """A tab spelled as a shell or a .env file lets one write it: ``\t`` or ``tab`` (the
        header hint says ``'\t'``; only ``$'\t'`` reached the setting as a tab)."""
        if isinstance(value, str) and value.strip().lower() in ("\\t", "tab"):
            return "\t"
        if value in ("\n", "\r", '"'):  # what a CSV parser reads as a line end or a quote
            raise ValueError("a line break or a quote cannot delimit fields: use , ; | or \\t")
        return value

    @field_validator("source")
    @classmethod
    def _one_spelling(cls, value: str) -> str:
        """A plain path in one spelling (``./data.csv`` and ``data.csv``, ``a//b`` and ``a/b``
        are the same file): the source is part of every build's identity, and the same file
        named two ways gave two build ids. Only ``.`` parts and doubled or trailing slashes go
        (``..`` stays: through a symlink it is not the folder above)."""
        if "://" in value or not value.strip():
            return parsable_uri(value)
        import pathlib

        return str(pathlib.PurePosixPath(value))

    @field_validator("sha256")
    @classmethod
    def _digest(cls, value: str | None) -> str | None:
        """A sha256 as ``sha256sum`` prints it (any case; a ``sha256:`` prefix is allowed): a
        malformed pin was only found after the download, as "the data changed"."""
        if value is None:
            return None
        digest = value.strip().lower().removeprefix("sha256:")
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise PydanticCustomError(
                "bad_sha256",
                "expected the dataset's sha256: 64 hex digits, as `sha256sum` or `pipeline data "
                "fetch` prints it",
            )
        return digest

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        """Settings of this section that contradict each other (``columns.data_conflict``)."""
        conflict = columns.data_conflict(self.target, self.task, self.drop, self.column_kinds)
        if conflict is not None:
            raise conflict
        return self


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
    clip_quantile: float = Field(
        0.01,
        ge=0,
        lt=0.25,
        description=(
            "Numeric inputs are clipped to the training rows' q and 1-q quantiles (after the "
            "log); 0: to their min and max"
        ),
    )
    bound_rows: int = Field(
        3,
        ge=1,
        description=(
            "Regression predictions are bounded from the k-th smallest to the k-th largest "
            "training target (k at most one per 400 training rows); 1: their min and max"
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
    linear_blend: bool = Field(
        True,
        description="Regression: also fit a ridge regression on the network's inputs and give "
        "it up to half of the output, as the validation rows favour (tables up to 4 million "
        "cells)",
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

    @model_validator(mode="after")
    def _fits_in_memory(self) -> Self:
        """Every member holds the hidden layers' weights: the ensemble's total is bounded (the
        bound was per member, so 64 members of [8192, 8192] passed and trained into a 17 GB
        allocation's traceback)."""
        each = sum(a * b for a, b in itertools.pairwise(self.hidden))
        weights = each * self.members
        if weights > MAX_HIDDEN_WEIGHTS:
            # A weight trains with its gradient and AdamW's two moments: 16 bytes in float32.
            raise PydanticCustomError(
                "too_many_weights",
                f"{weights:,} weights between hidden layers ({each:,} in each of {self.members} "
                f"member(s); {weights * 16 / 2**30:.1f} GiB to train): at most "
                f"{MAX_HIDDEN_WEIGHTS:,}; use narrower or fewer layers, or fewer members",
                {"fields": ("hidden", "members")},
            )
        return self


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
    bag_folds: Annotated[int | Literal["auto"], BeforeValidator(_folds)] = Field(
        "auto",
        description="K-fold bagging: K networks, each early-stopped on its held-out fold, in "
        "place of the refit (0: off); auto is 5 under 1,000 training + validation rows",
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
    # Part of the build's identity when set: the all-reduce order changes the float sums.
    workers: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="Train on Ray with this many data-parallel workers (--workers); unset: in "
        "this process",
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
        if self.bag_folds not in ("auto", 0) and self.workers:
            raise PydanticCustomError(
                "bag_folds",
                "bagging runs in this process, for small tables (data-parallel workers are for "
                "large ones): set bag_folds to 0 or auto, or unset workers",
                {"fields": ("bag_folds", "workers")},
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
    scheduler: Annotated[Literal["none", "halving"], _Lower] = Field(
        "none",
        description="halving: successive halving over the cv folds (every trial on one fold, "
        "the best 1/reduction on more, until the survivors have all); none: every trial on all",
    )
    reduction: int = Field(
        3, ge=2, le=100, description="halving: the share of trials kept at each rung is 1/this"
    )
    time_budget: float | None = Field(
        None,
        gt=0,
        le=MAX_SECONDS * 30,
        description="Seconds the whole search may take: then running trials are stopped and "
        "the rest never start (the result then depends on speed)",
    )
    connect_timeout: float = Field(
        30.0, gt=0, le=MAX_SECONDS, description="Seconds to reach the Ray cluster at RAY_ADDRESS"
    )

    @field_validator("space", mode="before")
    @classmethod
    def _dotted_keys(cls, space: Any) -> Any:
        return dotted(space)

    @field_validator("space")
    @classmethod
    def _valid_space(cls, space: dict[str, Any]) -> dict[str, Any]:
        sections = {"features": FeatureSettings, "model": ModelSettings, "train": TrainSettings}
        return check_space(space, sections)  # type: ignore[arg-type]
