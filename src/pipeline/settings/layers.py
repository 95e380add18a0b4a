"""The layers settings are read from: a preset file, a ``.env`` file, the environment, options.

Each layer is parsed into the nested mapping ``Settings.model_validate`` takes, and remembers
which variable (or file, or line) set each path, so that a message can name the place a value
came from. Nothing here echoes the raw value of a variable that holds a secret.
"""

from __future__ import annotations

import difflib
import io
import json
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_settings import EnvSettingsSource

from pipeline.errors import ConfigError
from pipeline.settings.tree import (
    ALIASED_ENV,
    CLI_OPTIONS,
    ENV_PREFIX,
    LOADER_VARS,
    NESTED,
    SECRET_FIELDS,
    SECRET_PATHS,
    Settings,
)

SettingPath = tuple[str, ...]

# Presets that ship with the tool: package data, so an editable install finds them as well as
# a wheel or an image does, whatever the working directory.
BUNDLED_PRESETS = Path(__file__).resolve().parents[1] / "presets"

SECTION_PATHS = {
    (name,)
    for name, f in Settings.model_fields.items()
    if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)
}
# The variables that set a whole section as JSON: PIPELINE_TRAIN='{"max_epochs": 5}'.
_SECTION_VARS = {f"{ENV_PREFIX}{name}".lower() for (name,) in SECTION_PATHS}
# Every path that is, or lies under, or leads to a secret: a value found there is never echoed.
_SECRETS: tuple[SettingPath, ...] = (*((name,) for name in SECRET_FIELDS), *SECRET_PATHS)
_ALIAS_FIELDS = {alias: name for name, alias in ALIASED_ENV.items()}


def holds_secret(path: SettingPath) -> bool:
    """Whether a value at ``path`` is, contains or may be a secret (a section holding one)."""
    return any(s[: len(path)] == path or path[: len(s)] == s for s in _SECRETS)


def paths(data: Mapping[str, Any], prefix: SettingPath = ()) -> Iterator[SettingPath]:
    """The setting paths a nested mapping sets (descending into sections only)."""
    for key, value in data.items():
        path = (*prefix, str(key).lower())
        if isinstance(value, Mapping) and path in SECTION_PATHS:
            yield from paths(value, path)
        else:
            yield path


@dataclass
class Layer:
    """One source of values: what it sets, and how a message names the variable behind a path."""

    origin: str  # "preset", ".env", "env" or "cli" (what `config show` prints)
    values: dict[str, Any]
    names: dict[SettingPath, str] = field(default_factory=dict)  # path a variable sets -> its name
    secrets: list[str] = field(default_factory=list)  # raw values never to appear in a message

    def where(self, path: SettingPath) -> tuple[str, SettingPath]:
        """How a message names the source of ``path``, and the path its variable sets."""
        for end in range(len(path), -1, -1):
            if path[:end] in self.names:
                return self.names[path[:end]], path[:end]
        return self.origin, ()


# --- .env ---------------------------------------------------------------------------------------


def read_dotenv(env_file: Path, required: bool = False) -> tuple[dict[str, str], dict[str, int]]:
    """The ``NAME=value`` pairs of a dotenv file and the line each name was last set on.

    A line that cannot be parsed is an error naming it (not a warning and a silent default);
    the line's text is not shown, as it may hold a credential. A file that is absent is empty,
    unless ``required`` (PIPELINE_ENV_FILE named it): then it is an error, as Docker's
    ``--env-file`` makes it, since every setting in it would silently be missing. Anything
    readable that is not a folder is read: ``/dev/null`` (no file) or a pipe (``<(...)``).
    """
    named = "(PIPELINE_ENV_FILE)" if required else "(the dotenv file read by default)"
    try:
        if env_file.is_dir():
            raise ConfigError(
                f"{env_file} {named} is a folder, not a file: point PIPELINE_ENV_FILE at a "
                "dotenv file, or remove the folder"
            )
        if not env_file.exists() and env_file.is_symlink():
            raise ConfigError(  # an unmounted secret: every setting in it would be missing
                f"{env_file} {named} is a link to {env_file.readlink()}, which does not exist "
                "(a secret not mounted?): mount it, or remove the link"
            )
        if not env_file.exists():
            if required:
                raise ConfigError(
                    f"{env_file} (PIPELINE_ENV_FILE) does not exist: fix the path, create the "
                    "file, or unset PIPELINE_ENV_FILE (./.env is read when present); "
                    "/dev/null reads no file"
                )
            return {}, {}
        raw = env_file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{env_file} cannot be read: {exc.strerror or exc}") from exc
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigError(
            f"{env_file} is UTF-16 text (it starts with a UTF-16 byte order mark): save it as UTF-8"
        )
    try:
        text = raw.decode("utf-8-sig")  # a UTF-8 byte order mark is dropped, not a name's start
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{env_file} line {line} is not UTF-8 text: save the file as UTF-8"
        ) from exc

    from dotenv import dotenv_values
    from dotenv.parser import parse_stream

    lines: dict[str, int] = {}
    raw_values: dict[str, str | None] = {}
    for binding in parse_stream(io.StringIO(text)):
        line = binding.original.line
        if binding.error:
            name = binding.original.string.split("=", 1)[0].strip().removeprefix("export ").strip()
            said = f" ({name})" if name.isidentifier() else ""
            raise ConfigError(
                f"{env_file} line {line}{said} cannot be parsed: expected NAME=value, with a "
                "value that has spaces or '#' in quotes; fix or remove the line"
            )
        if binding.key is not None and binding.value is None:
            # A name alone: dotenv (and Docker's --env-file) read it as "unset here", which
            # silently dropped a "PIPELINE_SEED:2" or a "PIPELINE_SEED" whose value was lost.
            key = binding.key
            if not key.isidentifier() or key.upper().startswith(ENV_PREFIX):
                said = f" ({key})" if key.isidentifier() else ""
                raise ConfigError(
                    f"{env_file} line {line}{said} has no '=': expected NAME=value; fix or "
                    "remove the line"
                )
        if binding.key is not None:
            _once(env_file, binding.key, binding.value, lines.get(binding.key), line, raw_values)
            lines[binding.key] = line
            raw_values[binding.key] = binding.value
    # Literal values, as `docker run --env-file` and Kubernetes read them: python-dotenv's
    # ${VAR} expansion (even in single quotes) turned a secret "ab${c}d" into "abd" silently.
    values = dotenv_values(stream=io.StringIO(text), interpolate=False)
    return {k: v for k, v in values.items() if v is not None}, lines


def _once(
    env_file: Path,
    key: str,
    value: str | None,
    before: int | None,
    line: int,
    raw_values: Mapping[str, str | None],
) -> None:
    """A setting's name on two lines of the file with different values is an error: the last
    line won without a word (python-dotenv's rule, and Docker's), so a value edited higher up
    changed nothing. The values are not shown (they may be credentials)."""
    ours = key.upper().startswith(ENV_PREFIX) or key.upper() in _ALIAS_FIELDS
    if ours and before is not None and raw_values.get(key) != value:
        raise ConfigError(
            f"{env_file} lines {before} and {line} both set {key}, to different values: keep one"
        )


# --- presets ------------------------------------------------------------------------------------


def find_preset(name: str, config_dir: str | None, where: str) -> Path:
    """The preset file ``name`` names: a ``.toml`` path, or a name in the config folder or the
    bundled presets (in that order). ``where`` says where PIPELINE_PRESET was set."""
    candidate = Path(name)
    if candidate.suffix == ".toml":
        if candidate.is_file():
            return candidate
        raise ConfigError(
            f"preset file '{name}' (from {where}) does not exist: set "
            "PIPELINE_PRESET to an existing .toml file or to the name of a preset"
        )
    dirs = [Path(config_dir) if config_dir else Path("config"), BUNDLED_PRESETS]
    for folder in dirs:
        path = folder / f"{name}.toml"
        if path.is_file():
            return path
    available = sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.toml")})
    raise ConfigError(
        f"unknown preset '{name}' (from {where}): expected one of "
        f"{available or 'none found'}; set PIPELINE_CONFIG_DIR to the folder holding your presets"
    )


def read_preset(path: Path, valid: set[SettingPath]) -> Layer:
    """The values of a preset file, every key checked against ``valid`` setting paths."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"preset {path} cannot be read: {exc}") from exc
    for key_path in paths(data):
        dotted = ".".join(key_path)
        if key_path in valid:
            if _credentials_in(_value_at(data, key_path)):
                raise ConfigError(
                    f"preset {path} sets '{dotted}' to a URI with credentials in it (a password "
                    "or a token): presets are versioned files and never hold credentials; set "
                    f"{ENV_PREFIX}{'__'.join(key_path).upper()} in the environment instead, or "
                    "give the credentials as AWS_* variables"
                )
            continue
        if holds_secret(key_path):
            raise ConfigError(
                f"preset {path} sets '{dotted}', a secret: presets are versioned files and never "
                "hold credentials; set it in the environment instead"
            )
        sections = sorted({p[0] for p in valid if len(p) > 1})
        table = len(key_path) > 1 or isinstance(data.get(key_path[0]), dict)
        if table and key_path[0] not in sections:  # [tuning]: the table is wrong
            close = difflib.get_close_matches(key_path[0], sections, n=1)
            hint = f"; did you mean [{close[0]}]?" if close else ""
            raise ConfigError(
                f"preset {path} has unknown section [{key_path[0]}]{hint} (sections: "
                f"{', '.join(sections)})"
            )
        close = difflib.get_close_matches(dotted, [".".join(p) for p in valid], n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"preset {path} sets unknown key '{dotted}'{hint}")
    return Layer("preset", data, {(): f"preset {path}"})


def _value_at(data: Mapping[str, Any], key_path: SettingPath) -> Any:
    value: Any = data
    for key in key_path:
        value = next(v for k, v in value.items() if str(k).lower() == key)
    return value


def _credentials_in(value: Any) -> bool:
    """Whether ``value`` is a URI with a password or a token in it (``log.carries_credentials``)."""
    from pipeline.log import carries_credentials

    return isinstance(value, str) and "://" in value and carries_credentials(value)


# --- variables: the environment, .env, command-line options ------------------------------------


def variable_path(name: str) -> SettingPath:
    """The setting path a variable sets: ``PIPELINE_SERVE__PORT`` -> ``("serve", "port")``."""
    upper = name.upper()
    if upper in _ALIAS_FIELDS:
        return (_ALIAS_FIELDS[upper],)
    if upper == "PORT":
        return ("serve", "port")
    return tuple(part.lower() for part in upper.removeprefix(ENV_PREFIX).split(NESTED))


def variables_layer(origin: str, mapping: Mapping[str, str], name: Callable[[str], str]) -> Layer:
    """Parse the setting variables of ``mapping`` (pydantic-settings' rules: JSON for lists,
    mappings and whole sections, ``__`` for nesting); ``name(var)`` says where a variable was
    set, as a message names it ("env var PIPELINE_SEED", ".env line 3 (PIPELINE_SEED)")."""
    relevant = {
        k: v
        for k, v in mapping.items()
        if (k.upper().startswith(ENV_PREFIX) or k.upper() in _ALIAS_FIELDS)
        and k.upper() not in LOADER_VARS
    }
    spelled: dict[str, str] = {}
    for var in sorted(relevant):
        first = spelled.setdefault(var.upper(), var)
        if first != var and relevant[first] != relevant[var]:  # which wins is the OS's order
            where = "the environment" if origin == "env" else f"{name(first)}; {name(var)}"
            raise ConfigError(
                f"{first} and {var} ({where}) are one setting spelled twice, with different "
                "values: keep one (names are not case-sensitive)"
            )
    _refuse_overlaps(relevant, name)
    values = _parse(relevant, name)
    # Aliased credentials come back under their alias; store them under the field name.
    for key in list(values):
        if key.upper() in _ALIAS_FIELDS:
            values[_ALIAS_FIELDS[key.upper()]] = values.pop(key)
    layer = Layer(origin, values)
    for var, raw in relevant.items():
        path = variable_path(var)
        layer.names[path] = name(var)
        if holds_secret(path):
            layer.secrets.append(raw)
    # The platform's unprefixed PORT (Heroku, Cloud Run) sets serve.port, unless the project's
    # own, more specific PIPELINE_SERVE__PORT (or a PIPELINE_SERVE JSON with a port) does.
    port = mapping.get("PORT")
    serve = values.get("serve")
    if port is not None and not (isinstance(serve, Mapping) and "port" in serve):
        values["serve"] = {**(serve if isinstance(serve, Mapping) else {}), "port": port}
        layer.names[("serve", "port")] = name("PORT")
    _collect_secrets(values, (), layer.secrets)
    return layer


def _refuse_overlaps(relevant: Mapping[str, str], name: Callable[[str], str]) -> None:
    """A setting given twice in one layer, by a section's JSON and by its own variable
    (``PIPELINE_TRAIN='{"max_epochs": 5}'`` and ``PIPELINE_TRAIN__MAX_EPOCHS=7``), is an
    error: one of them won by pydantic-settings' rules, silently. (Whether the two values
    agree is not judged: "7" and 7, 1e-3 and 0.001 are the same setting spelled apart.)"""
    if not any(var.lower() in _SECTION_VARS for var in relevant):
        return
    set_by: dict[SettingPath, str] = {}
    for var in sorted(relevant, key=lambda v: (v.count("__"), v)):  # sections first
        for path in paths(_parse({var: relevant[var]}, name)):
            first = set_by.setdefault(path, var)
            if first != var:
                raise ConfigError(
                    f"{name(first)} and {name(var)} both set {'.'.join(path)}: keep one (the "
                    "section's JSON or the setting's own variable)"
                )


def describe_variable(
    origin: str, env_file: Path | None = None, lines: Mapping[str, int] | None = None
) -> Callable[[str], str]:
    """How messages name a variable of the layer ``origin``."""

    def name(var: str) -> str:
        if origin == ".env":
            return f"{env_file} line {(lines or {}).get(var, '?')} ({var.upper()})"
        if origin == "cli":
            option = CLI_OPTIONS.get(var.upper())
            return f"option {option}" if option else f"a command-line option ({var.upper()})"
        return f"env var {var.upper()}"

    return name


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' env parsing (JSON for lists and dicts, ``__`` nesting) over a mapping."""

    def __init__(self, mapping: Mapping[str, str]) -> None:
        self._mapping = mapping
        super().__init__(Settings)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {k.lower(): v for k, v in self._mapping.items()}


def _parse(relevant: Mapping[str, str], name: Callable[[str], str]) -> dict[str, Any]:
    try:
        return dict(_MappingEnvSource(relevant)())
    except Exception as exc:  # pydantic-settings raises SettingsError for undecodable JSON
        culprit = next(iter(relevant), "")
        for key, value in relevant.items():
            try:
                _MappingEnvSource({key: value})()
            except Exception:
                culprit = key
                break
        raise _json_error(culprit, relevant.get(culprit, ""), name) from exc


def _json_error(var: str, value: str, name: Callable[[str], str]) -> ConfigError:
    try:
        json.loads(value)
        detail = ""
    except ValueError as exc:  # JSONDecodeError's message gives a position, never the text
        detail = f" ({exc})"
    # The text is not echoed: a broken object may hold a credential anywhere (a serve token, a
    # Kaggle key pasted into the wrong section), and the position above locates the mistake.
    example = _JSON_EXAMPLES.get(var.upper(), """'["Id"]' or '{"col": "categorical"}'""")
    if var.upper().count("__") == 0 and var.upper() not in _JSON_EXAMPLES:  # a whole section
        example = """the section's settings by name (PIPELINE_TRAIN='{"max_epochs": 5}')"""
    return ConfigError(
        f"invalid JSON in {name(var)}: expected JSON for a list or mapping{detail}, e.g. {example}"
    )


# What the JSON of a variable looks like, for the error of a broken one.
_JSON_EXAMPLES = {
    "PIPELINE_TUNE__SPACE": """'{"train.learning_rate": {"loguniform": [0.0003, 0.01]}}'""",
    "PIPELINE_DATA__COLUMN_KINDS": """'{"MSSubClass": "categorical"}'""",
    "PIPELINE_DATA__DROP": """'["Id"]'""",
    "PIPELINE_DATA__MISSING_VALUES": """'["NA", "?"]'""",
    "PIPELINE_MODEL__HIDDEN": "'[256, 128]'",
    "PIPELINE_RUN__REQUIRED_SECRETS": """'["AWS_SECRET_ACCESS_KEY"]'""",
}


def _collect_secrets(values: Mapping[str, Any], prefix: SettingPath, into: list[str]) -> None:
    """Add every value found at a secret path (e.g. a token inside PIPELINE_SERVE's JSON)."""
    for key, value in values.items():
        path = (*prefix, str(key).lower())
        if isinstance(value, Mapping):
            _collect_secrets(value, path, into)
        elif path in _SECRETS and value is not None:
            into.append(str(value))


def preset_toml(tree: dict[str, Any]) -> str:
    """A settings tree as TOML: top-level values first, then one table per section."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in tree.items() if not isinstance(v, dict)]
    for section, values in tree.items():
        if isinstance(values, dict):
            lines.append(f"\n[{section}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: JSON's escapes are TOML's
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{" + inner + "}"
    raise TypeError(f"no TOML for {type(value).__name__}")
