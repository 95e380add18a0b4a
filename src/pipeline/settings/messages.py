"""One line for settings that do not validate: which setting, where it came from, what is wrong.

"invalid setting train.threads from env var PIPELINE_TRAIN__THREADS: Input should be less than
or equal to 256 (got '100000')". The place is the layer that won for that setting: a preset file,
a ``.env`` line, an environment variable or a command-line option. A value is echoed only where
it cannot be a secret, and every known secret is masked from the line as a last defence.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from pipeline.settings.layers import Layer, SettingPath, holds_secret, paths
from pipeline.settings.tree import Settings

MAX_SHOWN = 3  # errors in one message; the rest are counted


def _model_at(path: SettingPath) -> type[BaseModel] | None:
    model: type[BaseModel] = Settings
    for part in path:
        info = model.model_fields.get(part)
        ann = info.annotation if info else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def _winner(path: SettingPath, layers: Sequence[Layer]) -> Layer | None:
    """The highest layer that set ``path`` (or a section or list that holds it)."""
    for layer in reversed(layers):
        for set_path in paths(layer.values):
            if path[: len(set_path)] == set_path:
                return layer
    return None


def where(path: SettingPath, layers: Sequence[Layer]) -> str:
    """How a message names the place the value at ``path`` came from."""
    layer = _winner(path, layers)
    return layer.where(path)[0] if layer else "default"


_SECTIONS: set[SettingPath] = {(n,) for n in Settings.model_fields if _model_at((n,))}


# Settings that name secrets: a bad entry there is often the secret, pasted where its name goes.
_SECRETS_NAMED = {("run", "required_secrets")}


def _echo_ok(loc: SettingPath, leaf: SettingPath, layers: Sequence[Layer]) -> bool:
    """Whether the input at ``loc`` may be shown: never a secret, and in a section that holds
    one only when the variable of that very setting gave it (PIPELINE_SERVE__PORT, PORT), never
    a JSON object for the whole section, whose misspelt key may be the token."""
    if (holds_secret(leaf) and leaf not in _SECTIONS) or leaf in _SECRETS_NAMED:
        return False
    if not holds_secret(loc[:1]):
        return True
    layer = _winner(loc, layers)
    if layer is None:
        return False
    _, var_path = layer.where(loc)
    return layer.origin == "preset" or (var_path == leaf and not holds_secret(leaf))


def _leaf(loc: SettingPath) -> SettingPath:
    """The setting a location falls in: ``("model", "hidden", "0")`` -> ``("model", "hidden")``."""
    if loc[:1] in _SECTIONS and len(loc) > 1:
        return loc[:2]
    return loc[:1]


# Settings holding a URI, which may carry credentials: a bad one is shown redacted.
_URIS = {("store",), ("data", "source"), ("ray_address",), ("aws_endpoint_url",)}


def _uri_shown(value: Any) -> str:
    """How an error shows a bad URI setting: with its credentials masked (``redacted_uri``),
    or not at all when it cannot be parsed far enough to find them."""
    from pipeline.log import redacted_uri

    try:
        return f" (got {redacted_uri(str(value))!r})"
    except ValueError:
        return " (the value is not shown: it may hold credentials)"


def one(err: ErrorDetails, layers: Sequence[Layer]) -> str:
    loc = tuple(str(p).lower() for p in err["loc"])
    ctx: dict[str, Any] = dict(err.get("ctx") or {})
    message = err["msg"].removeprefix("Value error, ")
    if "fields" in ctx:  # a rule across settings of one section (e.g. the split fractions)
        named = [(*loc, f) for f in ctx["fields"]]
        origins = [where(p, layers) for p in named]
        said = " and ".join(
            f"{'.'.join(p)} ({'default' if w == 'default' else 'from ' + w})"
            for p, w in zip(named, origins, strict=True)
        )
        return f"invalid settings {said}: {message}"
    leaf = _leaf(loc)
    section = _model_at(loc[:-1]) if loc else None
    if err["type"] == "extra_forbidden" and section is not None:
        names = list(section.model_fields)
        close = closest(str(loc[-1]), names)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return (
            f"invalid setting {'.'.join(loc)} from {where(loc, layers)}: {'.'.join(loc[:-1])} "
            f"has no setting '{loc[-1]}'{hint}; expected one of {', '.join(names)}"
        )
    if loc in _URIS:
        got = _uri_shown(err.get("input"))
    elif _echo_ok(loc, leaf, layers):
        got = f" (got {err.get('input')!r})"
    else:
        got = " (the value is not shown: it is, or sits beside, a secret)"
    # As given: a key of a mapping setting (a column name in column_kinds) keeps its case.
    given = tuple(str(p) for p in err["loc"])
    shown = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in given).lstrip(".") or "settings"
    origin = where(loc, layers)
    way = _unset_hint(err, origin) or _remedy(err)
    return f"invalid setting {shown} from {origin}: {message}{got}{way}"


# What to do about a value outside a setting's bounds or of the wrong kind (pydantic's message
# says what was expected; "Input should be greater than or equal to 1 (got '0')" stopped there).
_BOUNDS = {
    "greater_than_equal": ("ge", "{} or more"),
    "greater_than": ("gt", "more than {}"),
    "less_than_equal": ("le", "{} or less"),
    "less_than": ("lt", "less than {}"),
}
_KINDS = {"int_parsing": "a whole number", "int_from_float": "a whole number",
          "float_parsing": "a number", "bool_parsing": "true or false"}  # fmt: skip


def _remedy(err: ErrorDetails) -> str:
    """``; use 1 or more`` (and the like) for a bound or a kind the value missed, else ""."""
    kind, ctx = err["type"], dict(err.get("ctx") or {})
    if kind in _BOUNDS and _BOUNDS[kind][0] in ctx:
        key, shape = _BOUNDS[kind]
        return "; use " + shape.format(ctx[key])
    return f"; use {_KINDS[kind]}" if kind in _KINDS else ""


def _unset_hint(err: ErrorDetails, origin: str) -> str:
    """For an empty (or ``null``) variable that failed: how to get the default, which such a
    value does not mean (PIPELINE_RUN__WORKERS= in a script that writes one file)."""
    value = err.get("input")
    if not isinstance(value, str) or value.strip().lower() not in ("", "null", "none"):
        return ""
    if origin.startswith("env var "):
        return f"; an empty or null value is not unset: unset {origin.split()[-1]} for the default"
    if re.search(r" line \d+ \(\w+\)$", origin):  # a .env file's line
        return "; an empty or null value is not unset: remove the line for the default"
    return ""


def validation_message(exc: ValidationError, layers: Sequence[Layer]) -> str:
    """The one-line message for settings that failed validation."""
    errors = exc.errors()
    parts = [one(err, layers) for err in errors[:MAX_SHOWN]]
    if len(errors) > MAX_SHOWN:
        parts.append(f"and {len(errors) - MAX_SHOWN} more")
    return mask("; ".join(parts), layers)


def mask(message: str, layers: Sequence[Layer]) -> str:
    """``message`` with every secret value any layer holds replaced (a last line of defence)."""
    for layer in layers:
        for secret in sorted(layer.secrets, key=len, reverse=True):
            if len(secret) >= 4:
                message = message.replace(secret, "**********")
    return message


def closest(name: str, names: list[str]) -> list[str]:
    """The name to suggest for a misspelt ``name``: the shortest one it begins (MIN_F1 is
    MIN_F1_MACRO, where difflib said MIN_R2), else difflib's closest, else none."""
    longer = [n for n in names if n.startswith(name) and n != name]
    return [min(longer, key=len)] if longer else difflib.get_close_matches(name, names, n=1)
