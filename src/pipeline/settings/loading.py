"""Reading the settings tree from the environment, and saying where each value came from.

Precedence, lowest to highest: field defaults < preset (``config/<name>.toml``, chosen by
``PIPELINE_PRESET``) < ``.env`` < process environment. Names use the ``PIPELINE_`` prefix and
``__`` for nesting (``PIPELINE_TRAIN__MAX_EPOCHS``). This is the only module that reads
``os.environ``.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_settings import EnvSettingsSource

from pipeline.errors import ConfigError
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


def _preset_path(name: str, config_dir: str | None) -> Path:
    candidate = Path(name)
    if candidate.suffix == ".toml":
        if candidate.is_file():
            return candidate
        raise ConfigError(
            f"preset file '{name}' does not exist: set PIPELINE_PRESET to an existing .toml file "
            "or to the name of a preset in config/"
        )
    dirs = [Path(config_dir)] if config_dir else [Path("config")]
    dirs.append(Path(__file__).parent / "presets")  # presets bundled into the wheel
    for folder in dirs:
        path = folder / f"{name}.toml"
        if path.is_file():
            return path
    available = sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.toml")})
    raise ConfigError(
        f"unknown preset '{name}' (PIPELINE_PRESET): expected one of {available or 'none found'}; "
        "set PIPELINE_CONFIG_DIR to the folder holding your presets"
    )


def _paths(data: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for key, value in data.items():
        path = (*prefix, str(key).lower())
        if isinstance(value, Mapping) and path in _SECTION_PATHS:
            yield from _paths(value, path)
        else:
            yield path


_SECTION_PATHS = {
    (name,)
    for name, f in Settings.model_fields.items()
    if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)
}


def _check_preset_keys(data: Mapping[str, Any], path: Path) -> None:
    valid = {leaf.path for leaf in leaves() if not leaf.secret}
    for key_path in _paths(data):
        if key_path not in valid:
            dotted = ".".join(key_path)
            close = difflib.get_close_matches(dotted, [".".join(p) for p in valid], n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"preset {path} sets unknown key '{dotted}'{hint}")


def _format_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = [str(p) for p in err["loc"]]
        env = ENV_PREFIX + NESTED.join(loc).upper() if loc else "settings"
        parts.append(f"{env}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(parts)


def load(
    environ: Mapping[str, str] | None = None,
    env_file: Path | None = None,
    overrides: Mapping[str, str] | None = None,
) -> Loaded:
    """Resolve the settings from defaults, preset, .env, the environment and CLI options.

    ``environ`` defaults to ``os.environ``; ``env_file`` defaults to ``PIPELINE_ENV_FILE`` or
    ``./.env``; ``overrides`` are ``PIPELINE_*`` names set by command-line options (highest
    precedence). Raises ``ConfigError`` with the offending variable named.
    """
    environ = dict(os.environ if environ is None else environ)
    if env_file is None:
        env_file = Path(environ.get("PIPELINE_ENV_FILE", ".env"))
    dotenv: dict[str, str] = {}
    if env_file.is_file():
        from dotenv import dotenv_values

        dotenv = {k: v for k, v in dotenv_values(env_file).items() if v is not None}

    def loader_var(name: str) -> str | None:
        return environ.get(name) or dotenv.get(name)

    preset_name = loader_var("PIPELINE_PRESET")
    preset_path = (
        _preset_path(preset_name, loader_var("PIPELINE_CONFIG_DIR")) if preset_name else None
    )
    preset: dict[str, Any] = {}
    if preset_path is not None:
        try:
            preset = tomllib.loads(preset_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"preset {preset_path} cannot be read: {exc}") from exc
        _check_preset_keys(preset, preset_path)

    known = _known_env_names()
    unknown = sorted(
        k
        for k in {*environ, *dotenv}
        if k.upper().startswith(ENV_PREFIX) and k.upper() not in known
    )

    # Unknown names are reported by the caller, so they are left out of parsing here.
    env_values = _source_values({k: v for k, v in environ.items() if k not in unknown})
    dotenv_values_ = _source_values({k: v for k, v in dotenv.items() if k not in unknown})

    layers = [
        ("preset", preset),
        (".env", _with_port(dotenv_values_, dotenv)),
        ("env", _with_port(env_values, environ)),
    ]
    if overrides:
        layers.append(("cli", _source_values(overrides)))
    merged: dict[str, Any] = {}
    origins: dict[tuple[str, ...], str] = {}
    for origin, layer in layers:
        _deep_merge(merged, layer)
        for path in _paths(layer):
            origins[path] = origin
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(f"invalid setting: {_format_validation(exc)}") from exc
    for leaf in leaves():
        origins.setdefault(leaf.path, "default")
    return Loaded(settings, origins, preset_path, env_file if dotenv else None, unknown)


def _with_port(values: dict[str, Any], source: Mapping[str, str]) -> dict[str, Any]:
    """``values`` plus ``serve.port`` from the platform's unprefixed ``PORT`` (Heroku, Cloud Run).

    PIPELINE_SERVE__PORT from the same source wins: it is the project's own, more specific name.
    """
    port = source.get("PORT")
    serve = values.get("serve")
    if port is None or (isinstance(serve, Mapping) and "port" in serve):
        return values
    return {**values, "serve": {**(serve if isinstance(serve, Mapping) else {}), "port": port}}


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' env parsing (JSON for lists and dicts, ``__`` nesting) over a mapping."""

    def __init__(self, mapping: Mapping[str, str]) -> None:
        self._mapping = mapping
        super().__init__(Settings)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {k.lower(): v for k, v in self._mapping.items()}


def _source_values(mapping: Mapping[str, str]) -> dict[str, Any]:
    """Parse the PIPELINE_* (and credential) variables of ``mapping`` into a nested dict."""
    relevant = {
        k: v
        for k, v in mapping.items()
        if k.upper().startswith(ENV_PREFIX) or k.upper() in ALIASED_ENV.values()
    }
    relevant = {k: v for k, v in relevant.items() if k.upper() not in LOADER_VARS}
    try:
        values = _MappingEnvSource(relevant)()
    except Exception as exc:  # pydantic-settings raises SettingsError for undecodable JSON
        culprit = next(iter(relevant), "a PIPELINE_ variable")
        for key, value in relevant.items():
            try:
                _MappingEnvSource({key: value})()
            except Exception:
                culprit = f"{key.upper()}={value!r}"
                break
        raise ConfigError(
            f"invalid setting {culprit}: expected JSON for a list or mapping, "
            'e.g. \'["Id"]\' or \'{"col": "categorical"}\''
        ) from exc
    # Aliased credentials come back under their alias; store them under the field name.
    for field, alias in ALIASED_ENV.items():
        for key in list(values):
            if key.upper() == alias:
                values[field] = values.pop(key)
    return values


def _deep_merge(into: dict[str, Any], layer: Mapping[str, Any]) -> None:
    for key, value in layer.items():
        key = str(key).lower()
        if (
            isinstance(value, Mapping)
            and isinstance(into.get(key), dict)
            and (key,) in _SECTION_PATHS
        ):
            _deep_merge(into[key], value)
        else:
            into[key] = dict(value) if isinstance(value, Mapping) else value


def unknown_error(unknown: list[str]) -> ConfigError:
    """The error for unknown PIPELINE_* variables, with a suggestion for the first one."""
    known = sorted(_known_env_names())
    first = unknown[0]
    close = difflib.get_close_matches(first.upper(), known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    names = ", ".join(unknown)
    return ConfigError(
        f"unknown setting {names}{hint}: remove or rename it; `pipeline config show` lists every "
        "setting"
    )


def redact(value: Any) -> Any:
    """What a secret looks like in any output."""
    return "**********" if value else None
