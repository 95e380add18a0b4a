"""Reading the settings tree from the environment, and saying where each value came from.

Precedence, lowest to highest: field defaults < preset (``<name>.toml`` in
``PIPELINE_CONFIG_DIR``, ``./config`` or the bundled presets, chosen by ``PIPELINE_PRESET``) <
``.env`` < process environment < command-line options. Names use the ``PIPELINE_`` prefix and
``__`` for nesting (``PIPELINE_TRAIN__MAX_EPOCHS``). ``layers`` reads each source and
``messages`` words what fails to validate. This is the only module that reads ``os.environ``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from pipeline.errors import ConfigError
from pipeline.settings import layers, messages
from pipeline.settings.tree import (
    ALIASED_ENV,
    ENV_PREFIX,
    LOADER_VARS,
    NESTED,
    SECRET_FIELDS,
    SECRET_PATHS,
    Settings,
)


@dataclass(frozen=True)
class Leaf:
    """One setting: its dotted path, env var name and whether it is a secret."""

    path: tuple[str, ...]
    env: str
    secret: bool
    description: str
    default: Any


def leaves(model: type[BaseModel] = Settings, prefix: tuple[str, ...] = ()) -> Iterator[Leaf]:
    """Every setting of the tree, depth first, in declaration order."""
    for name, field in model.model_fields.items():
        path = (*prefix, name)
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from leaves(ann, path)
            continue
        env = ALIASED_ENV.get(name) or ENV_PREFIX + NESTED.join(path).upper()
        default = None if field.is_required() else field.get_default(call_default_factory=True)
        secret = name in SECRET_FIELDS or path in SECRET_PATHS
        yield Leaf(path, env, secret, field.description or "", default)


def provides(settings: Settings, name: str) -> bool:
    """Whether the variable ``name`` has a value for this process (``run.required_secrets``):
    a non-empty one in its environment, or, for a setting's own variable (AWS_SECRET_ACCESS_KEY,
    PIPELINE_SERVE__TOKEN), one the settings hold from ``.env`` or a preset. The AWS keys in
    ``.env`` reached the S3 client but did not count as set, and a release requiring them
    refused to run."""
    from pydantic import SecretStr

    if os.environ.get(name):
        return True
    for leaf in leaves():
        if leaf.env == name:
            value: Any = settings
            for part in leaf.path:
                value = getattr(value, part)
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            return value is not None and value != ""
    return False


def _known_env_names() -> set[str]:
    names = set(LOADER_VARS)
    for leaf in leaves():
        names.add(leaf.env)
        # A whole section may also be given as JSON: PIPELINE_TRAIN='{"max_epochs": 5}'.
        for depth in range(1, len(leaf.path)):
            names.add(ENV_PREFIX + NESTED.join(leaf.path[:depth]).upper())
    return names


@dataclass(frozen=True)
class Loaded:
    """Resolved settings with where each value came from."""

    settings: Settings
    origins: dict[tuple[str, ...], str]
    preset: Path | None
    env_file: Path | None
    unknown: list[str]


# What each loader variable means when it is unset.
_UNSET = {
    "PIPELINE_PRESET": "no preset",
    "PIPELINE_CONFIG_DIR": "./config, then the bundled presets",
    "PIPELINE_ENV_FILE": "./.env, read when present (/dev/null reads none)",
}


def _loader_var(
    name: str, environ: dict[str, str], dotenv: dict[str, str], in_dotenv: Any
) -> tuple[str | None, str]:
    """A loader variable's value (None: unset) and where it came from; the environment wins."""
    if name in environ:
        _not_empty(name, environ[name], "env var")
        return environ[name], f"env var {name}"
    _not_empty(name, dotenv.get(name), in_dotenv(name))
    return dotenv.get(name) or None, in_dotenv(name)


def _not_empty(name: str, value: str | None, origin: str) -> None:
    """A loader variable set empty is exit 3, as any other setting is: PIPELINE_PRESET=$TUNED
    with $TUNED unset trained the default recipe (exit 0), and an empty PIPELINE_ENV_FILE was
    'a folder' (the current one)."""
    if value is not None and not value.strip():
        where = f"env var {name}" if origin == "env var" else origin
        raise ConfigError(
            f"{name} is set but empty (from {where}): an empty variable is a value, not unset; "
            f"unset it for {_UNSET[name]}, or give it a value"
        )


def load(
    environ: Mapping[str, str] | None = None,
    env_file: Path | None = None,
    overrides: Mapping[str, str] | None = None,
    *,
    judge_serve: bool = True,
) -> Loaded:
    """Resolve the settings from defaults, preset, .env, the environment and CLI options.

    ``environ`` defaults to ``os.environ``; ``env_file`` defaults to ``PIPELINE_ENV_FILE`` (which
    must exist: a misspelt name would drop every setting in the file) or ``./.env`` (read when
    present); ``overrides`` are ``PIPELINE_*`` names set by command-line options (highest
    precedence). Raises ``ConfigError`` naming the setting and where its value came from.

    ``judge_serve`` False: an invalid value of the ``serve`` section (the HTTP server's, read by
    `pipeline serve` alone) is left at its default instead: a platform's ``PORT=abc`` made
    `pipeline train` exit 3 over a port it never opens. Unknown names stay errors everywhere.
    """
    environ = dict(os.environ if environ is None else environ)
    named = env_file is None and "PIPELINE_ENV_FILE" in environ
    if env_file is None:
        _not_empty("PIPELINE_ENV_FILE", environ.get("PIPELINE_ENV_FILE"), "env var")
        env_file = Path(environ.get("PIPELINE_ENV_FILE", ".env"))
    dotenv, lines = layers.read_dotenv(env_file, required=named)
    in_dotenv = layers.describe_variable(".env", env_file, lines)
    if "PIPELINE_ENV_FILE" in dotenv:  # ignored: the file to read was chosen before it
        raise ConfigError(
            f"{in_dotenv('PIPELINE_ENV_FILE')} sets PIPELINE_ENV_FILE, which only the "
            "environment can set (the file is chosen before it is read): set it in the "
            "environment, or remove the line"
        )

    preset_name, preset_from = _loader_var("PIPELINE_PRESET", environ, dotenv, in_dotenv)
    config_dir, config_from = _loader_var("PIPELINE_CONFIG_DIR", environ, dotenv, in_dotenv)
    if config_dir and not Path(config_dir).is_dir():  # a typo, or a volume not mounted: said
        # now, not when a preset is first named (then it fell back to the bundled one)
        raise ConfigError(
            f"PIPELINE_CONFIG_DIR={config_dir} (from {config_from}) is not a folder: set it to "
            "the folder holding your presets, or unset it (./config, then the bundled presets)"
        )
    preset_path = None
    stack: list[layers.Layer] = []
    if preset_name:
        preset_path = layers.find_preset(preset_name, config_dir, preset_from)
        valid = {leaf.path for leaf in leaves() if not leaf.secret}
        stack.append(layers.read_preset(preset_path, valid))
        _check_alone(stack[-1], judge_serve)  # each value, whatever later layers set

    known = _known_env_names()
    unknown = sorted(
        k
        for k in {*environ, *dotenv}
        if k.upper().startswith(ENV_PREFIX) and k.upper() not in known
    )
    # Unknown names are reported by the caller, so they are left out of parsing here.
    known_dotenv = {k: v for k, v in dotenv.items() if k not in unknown}
    known_environ = {k: v for k, v in environ.items() if k not in unknown}
    stack.append(layers.variables_layer(".env", known_dotenv, in_dotenv))
    if "PORT" in known_environ and any(("serve", "port") in layers.paths(x.values) for x in stack):
        # The project's own PIPELINE_SERVE__PORT, in .env or a preset, wins over the
        # platform's PORT (the environment's PORT had overridden .env's port, unsaid).
        known_environ = {k: v for k, v in known_environ.items() if k != "PORT"}
    stack.append(layers.variables_layer("env", known_environ, layers.describe_variable("env")))
    if overrides:
        stack.append(layers.variables_layer("cli", overrides, layers.describe_variable("cli")))
    merged: dict[str, Any] = {}
    origins: dict[tuple[str, ...], str] = {}
    for layer in stack:
        _deep_merge(merged, layer.values)
        for path in layers.paths(layer.values):
            origins[path] = layer.origin
    try:
        settings = _validate(merged, judge_serve)
    except ValidationError as exc:
        raise ConfigError(messages.validation_message(exc, stack)) from None
    for leaf in leaves():
        origins.setdefault(leaf.path, "default")
    # Messages of later stages name the place a value came from (settings.source_of).
    settings._sources = {path: messages.where(path, stack) for path in origins}
    return Loaded(settings, origins, preset_path, env_file if dotenv else None, unknown)


def _check_alone(preset: layers.Layer, judge_serve: bool) -> None:
    """ConfigError for a preset value that is wrong by itself (its type or range), although a
    later layer overrides it: `max_epochs = "ten"` in a versioned preset trained on a laptop
    whose .env set the epochs, then failed in CI. Rules across settings are judged on the
    merged values only, where the later layers may well settle them."""
    try:
        Settings.model_validate(preset.values)
        return
    except ValidationError as exc:
        errors = exc.errors()
    given = set(layers.paths(preset.values))
    bad = [
        e for e in errors
        if any(tuple(str(p).lower() for p in e["loc"][: len(g)]) == g for g in given)
        and (judge_serve or e["loc"][:1] != ("serve",))
    ]  # fmt: skip
    if bad:
        parts = [messages.one(e, [preset]) for e in bad[: messages.MAX_SHOWN]]
        raise ConfigError(messages.mask("; ".join(parts), [preset]))


def _validate(merged: dict[str, Any], judge_serve: bool) -> Settings:
    """``Settings`` of ``merged``; with ``judge_serve`` False, the ``serve`` section's invalid
    values are dropped (their defaults hold) and only the other settings' errors are raised."""
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        serve = merged.get("serve")
        bad = {
            e["loc"][1]
            for e in exc.errors()
            if e["loc"][:1] == ("serve",) and len(e["loc"]) > 1 and e["type"] != "extra_forbidden"
        }
        if judge_serve or not bad or not isinstance(serve, dict):
            raise
    return Settings.model_validate(
        {**merged, "serve": {k: serve[k] for k in serve if k not in bad}}
    )


def _deep_merge(into: dict[str, Any], layer: Mapping[str, Any]) -> None:
    for key, value in layer.items():
        key = str(key).lower()
        if (
            isinstance(value, Mapping)
            and isinstance(into.get(key), dict)
            and (key,) in layers.SECTION_PATHS
        ):
            _deep_merge(into[key], value)
        else:
            into[key] = dict(value) if isinstance(value, Mapping) else value


def unknown_error(unknown: list[str]) -> ConfigError:
    """The error for unknown PIPELINE_* variables, with a suggestion for the first one."""
    known = sorted(_known_env_names())
    first = unknown[0]
    close = messages.closest(first.upper(), known)
    hint = f" (did you mean {close[0]}?)" if close else ""
    names = ", ".join(unknown)
    return ConfigError(
        f"unknown setting {names}{hint}: remove or rename it; `pipeline config show` lists every "
        "setting"
    )


def redact(value: Any) -> Any:
    """What a secret looks like in any output."""
    return "**********" if value else None
