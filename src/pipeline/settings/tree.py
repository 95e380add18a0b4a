"""The settings tree: one typed section per concern, and the secrets it holds.

Every setting is a field with a default, a range and a description (which `pipeline config
show` and the README's table print). ``Settings.build_config`` is the part a build records and
its id covers; ``Settings.public`` is everything but the secrets.

The sections are declared in ``sections`` (data, features, model, train, tune, gates) and
``serving`` (run, serve); this module composes them into ``Settings`` and re-exports them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, PrivateAttr, SecretStr, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from pipeline.settings.gates import GateSettings
from pipeline.settings.sections import (
    DEFAULT_MISSING,
    MAX_HIDDEN_WEIGHTS,
    MAX_LAYERS,
    MAX_MEMBERS,
    MAX_NAME_LENGTH,
    MAX_SECONDS,
    MAX_THREADS,
    MAX_WIDTH,
    MODEL_NAME_RE,
    MODEL_NAME_RULE,
    MODEL_VERSION_RE,
    MODEL_VERSION_RULE,
    ColumnKind,
    DataSettings,
    FeatureSettings,
    ModelSettings,
    Task,
    TrainSettings,
    TuneSettings,
    Width,
    _Lower,
    refuse_bool,
)
from pipeline.settings.serving import RunSettings, ServeSettings
from pipeline.settings.uris import parsable_uri

__all__ = [
    "ALIASED_ENV",
    "CLI_OPTIONS",
    "DEFAULT_MISSING",
    "ENV_PREFIX",
    "LOADER_VARS",
    "MAX_HIDDEN_WEIGHTS",
    "MAX_LAYERS",
    "MAX_MEMBERS",
    "MAX_NAME_LENGTH",
    "MAX_SECONDS",
    "MAX_THREADS",
    "MAX_WIDTH",
    "MODEL_NAME_RE",
    "MODEL_NAME_RULE",
    "MODEL_VERSION_RE",
    "MODEL_VERSION_RULE",
    "NESTED",
    "SECRET_FIELDS",
    "SECRET_PATHS",
    "ColumnKind",
    "DataSettings",
    "FeatureSettings",
    "GateSettings",
    "ModelSettings",
    "RunSettings",
    "ServeSettings",
    "Settings",
    "Task",
    "TrainSettings",
    "TuneSettings",
    "Width",
]


ENV_PREFIX = "PIPELINE_"
NESTED = "__"
# Variables that steer how settings are loaded rather than being settings themselves.
LOADER_VARS = ("PIPELINE_PRESET", "PIPELINE_CONFIG_DIR", "PIPELINE_ENV_FILE")


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
    store_cache_bytes: int = Field(
        5 * 1024**3,
        ge=0,
        description="Bytes of an s3:// store's local download cache kept; least recently used "
        "copies go first",
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

    # An S3 client's settings, read here (environment or .env) and handed to it: it read the
    # process's AWS_* variables itself, so .env was shown by `config show` but not used.
    aws_access_key_id: str | None = Field(
        None,
        validation_alias=AliasChoices("AWS_ACCESS_KEY_ID"),
        description="S3 access key id (s3:// stores and datasets)",
    )
    aws_endpoint_url: str | None = Field(
        None,
        validation_alias=AliasChoices("AWS_ENDPOINT_URL"),
        description="Endpoint of an S3-compatible server, http(s)://host:port; unset: AWS",
    )
    aws_region: str | None = Field(
        None, validation_alias=AliasChoices("AWS_REGION"), description="S3 region"
    )
    aws_allow_http: bool = Field(
        False,
        validation_alias=AliasChoices("AWS_ALLOW_HTTP"),
        description="Allow an http:// AWS_ENDPOINT_URL (s3:// stores; a local test server)",
    )
    # An s3:// store's secrets, masked in every message like the others.
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

    @field_validator("*", mode="before")
    @classmethod
    def _not_a_bool(cls, value: Any, info: ValidationInfo) -> Any:
        return refuse_bool(cls, value, info)

    def source_of(self, *path: str) -> str:
        """Where the value at ``path`` (e.g. ``"train", "device"``) came from, for a message."""
        env = ALIASED_ENV.get(path[-1]) or ENV_PREFIX + NESTED.join(path).upper()
        return self._sources.get(path) or env

    def is_set(self, *path: str) -> bool:
        """Whether the value at ``path`` was set (by a preset, .env, the environment or an
        option) rather than left at its default; False for settings built in code."""
        return self._sources.get(path, "default") != "default"

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
        retries, whether its endpoint may be plain http, and the S3 client's configuration
        (those of key id, secret, session token, endpoint and region that are set)."""
        secret, token = self.aws_secret_access_key, self.aws_session_token
        s3 = {
            "access_key_id": self.aws_access_key_id,
            "secret_access_key": secret.get_secret_value() if secret else None,
            "session_token": token.get_secret_value() if token else None,
            "endpoint": self.aws_endpoint_url,
            "region": self.aws_region,
        }
        return {
            "timeout": self.store_timeout,
            "retries": self.store_retries,
            "cache_bytes": self.store_cache_bytes,
            "allow_http": self.aws_allow_http,
            "s3": {k: v for k, v in s3.items() if v},
        }

    @field_validator("store", "ray_address")
    @classmethod
    def _parsable(cls, value: str | None) -> str | None:
        return None if value is None else parsable_uri(value)

    @field_validator("store")
    @classmethod
    def _unpadded(cls, value: str) -> str:
        """PIPELINE_STORE=' ./store' opened a folder named ' .' and its messages named "store
        ./store", the space unseen: spaces at either end are refused, as a typo."""
        if value != value.strip():
            raise PydanticCustomError("padded", "starts or ends with a space: remove it")
        if not value:  # refused when the store opened; `config show` passed it
            raise PydanticCustomError(
                "empty_store",
                "names no store: expected a folder path, a file:///absolute/path URI or "
                "s3://bucket/prefix",
            )
        return value

    @field_validator("ray_address")
    @classmethod
    def _ray_address(cls, value: str | None) -> str | None:
        """No spaces in a cluster's address: RAY_ADDRESS='garbage address' waited up to the
        connect timeout and said the cluster could not be reached (exit 5, a network fault)."""
        if value is not None and any(c.isspace() for c in value.strip()):
            raise PydanticCustomError(
                "ray_address",
                "holds a space: expected host:port, ray://host:port, http://host:port or "
                "auto (empty or local: the embedded runtime)",
            )
        # Ray's `local`: start a runtime of one's own (it was looked up as a host name, exit 5).
        return None if value is not None and value.strip().lower() == "local" else value

    @field_validator("aws_endpoint_url")
    @classmethod
    def _endpoint(cls, url: str | None) -> str | None:
        """An http(s)://host[:port] URL: anything else made the S3 client panic mid-request. A
        user, password, path or query is refused too: ``config show`` printed a password in
        it, and a path made every request fail as "bucket does not exist"."""
        from urllib.parse import urlparse

        if url is None:
            return None
        try:
            parsed = urlparse(url)
            ok = parsed.scheme in ("http", "https") and bool(parsed.hostname)
            ok = ok and not any(c.isspace() for c in url) and (parsed.port or 1) > 0
            ok = ok and "@" not in parsed.netloc and parsed.path in ("", "/")
            ok = ok and not (parsed.query or parsed.fragment or parsed.params)
        except ValueError:
            ok = False
        if not ok:
            raise PydanticCustomError(
                "endpoint_url",
                "expected http(s)://host or http(s)://host:port, without a user, password, "
                "path or query",
            )
        return url

    def build_config(self, *, resolved: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The settings that shape a trained model: what a build records and its id covers.

        Operational knobs (store, logging, timeouts, gates, device, threads) and the package
        name/version are left out: they do not change what is learned, and if the device or
        thread count did change the weights, the weights' own digest changes the id.

        The data section is in one spelling of what it means, as a content-addressed tool
        canonicalises its inputs (the same model trained with ``["NA", "?"]`` and ``["?", "NA"]``
        had two ids): the missing-value markers and the dropped columns as sorted sets; what
        ``auto`` resolved to, when the caller read the data (``resolved``: the ``format`` the
        file was read as, the ``task`` and the ``target_transform`` the data decided;
        ``Prepared.resolved``): ``task=auto`` and ``task=regression`` on the same table are one
        model. A task that auto resolved to a classification stays ``auto``: auto reads a
        target of text numbers as numbers ("1" and "1.0" one class), a declared classification
        takes its values as labels, so that is not only a spelling (and `evaluate` retrains
        with the recorded settings). No sha256 pin either, which only checks the bytes whose
        digest the build's inputs record anyway. ``public`` keeps the values as given.
        """
        pub = self.public()
        data = {k: v for k, v in pub["data"].items() if k != "sha256"}
        data["missing_values"] = sorted(set(data["missing_values"]))
        data["drop"] = sorted(set(data["drop"]))
        train = {
            k: v
            for k, v in pub["train"].items()
            if k not in _OPERATIONAL_TRAIN and not (k == "workers" and v is None)
        }
        if resolved is not None:
            data["format"] = resolved["format"]
            if resolved["task"] == "regression":
                data["task"] = "regression"
            train["target_transform"] = resolved["target_transform"]
        return {
            "seed": pub["seed"],
            "data": data,
            "features": pub["features"],
            # Every model setting but the package's name and version (a preset written by
            # `pipeline tune` pins them all: members and the ridge blend too).
            "model": {k: v for k, v in pub["model"].items() if k not in ("name", "version")},
            # ``workers`` only when set: an in-process build keeps the config (and id) it had.
            "train": train,
        }

    def public(self) -> dict[str, Any]:
        """The non-secret settings as plain JSON-able data (what manifests record): the secret
        fields left out, and credentials written into a URI (``https://user:password@...``,
        ``?token=...``) shown as ``***`` (``URI_PATHS``)."""
        from pipeline.log import redacted_uri

        exclude: dict[str, Any] = {name: True for name in SECRET_FIELDS}
        for *section, name in SECRET_PATHS:
            exclude.setdefault(section[0], {})[name] = True
        out = self.model_dump(mode="json", exclude=exclude)
        for *section, name in URI_PATHS:
            holder = out[section[0]] if section else out
            if holder.get(name):
                holder[name] = redacted_uri(holder[name])
        return out

    def uri_secrets(self) -> list[str]:
        """The credentials written into the URI settings (for ``log.register_secrets``)."""
        from pipeline.log import uri_secrets

        dumped = self.model_dump()
        found: list[str] = []
        for *section, name in URI_PATHS:
            found += uri_secrets((dumped[section[0]] if section else dumped)[name])
        return found


# Settings that hold a URI, which may carry credentials (``public`` masks them).
URI_PATHS: tuple[tuple[str, ...], ...] = (("store",), ("data", "source"), ("ray_address",))


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
               "PIPELINE_SERVE__PORT": "--port", "PIPELINE_RUN__WORKERS": "--workers",
               "PIPELINE_TRAIN__WORKERS": "--workers",
               "PIPELINE_TUNE__TRIALS": "--trials"}  # fmt: skip
ALIASED_ENV = {"ray_address": "RAY_ADDRESS",
               "kaggle_username": "KAGGLE_USERNAME", "kaggle_key": "KAGGLE_KEY",
               "kaggle_api_token": "KAGGLE_API_TOKEN", "kaggle_config_dir": "KAGGLE_CONFIG_DIR",
               "xdg_config_home": "XDG_CONFIG_HOME",
               "aws_access_key_id": "AWS_ACCESS_KEY_ID", "aws_endpoint_url": "AWS_ENDPOINT_URL",
               "aws_region": "AWS_REGION", "aws_allow_http": "AWS_ALLOW_HTTP",
               "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
               "aws_session_token": "AWS_SESSION_TOKEN"}  # fmt: skip
