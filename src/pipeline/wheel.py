"""A package as a pip-installable wheel: ``import <name>_model; <name>_model.predict(frame)``.

The wheel holds the package's verified files unchanged under ``<import_pkg>/model/``, a
generated ``<import_pkg>/__init__.py`` and the ``.dist-info`` files of the wheel spec
(https://packaging.python.org/en/latest/specifications/binary-distribution-format/). The loader
is pipeline's own code (``Requires-Dist: pipeline==<version>``): on first use ``predict``
verifies the files with ``pipeline.package.open_directory`` and loads them with
``pipeline.predict.Predictor``, so an installed model is checked exactly as an archive is.

The zip is written by hand so the same package always gives the same bytes: entries in a fixed
order (the package's files sorted, then ``METADATA``, ``WHEEL`` and ``RECORD`` last, as the
spec recommends), every entry dated 1980-01-01 with mode 0644 and made on "Unix", deflated at
level 9. This module takes plain values, not an ``OpenedPackage``, so ``package`` can call it
without an import cycle.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import zipfile
from collections.abc import Mapping

from pipeline.errors import ConfigError

TAG = "py3-none-any"
DATE_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip header can hold
FILE_MODE = 0o644 << 16  # unix permission bits live in the high 16 bits of external_attr
UNIX = 3  # ZipInfo.create_system: zipfile picks 0 on Windows, which would change the bytes

# Semver pre-release identifiers that PEP 440 can express: 1.2.0-rc.1 -> 1.2.0rc1.
_PRE = re.compile(r"(?P<kind>alpha|a|beta|b|rc|c|pre|preview|dev)\.?(?P<n>0|[1-9]\d*)?")
_PEP440_PRE = {"alpha": "a", "a": "a", "beta": "b", "b": "b", "rc": "rc", "c": "rc"}
_PEP440_PRE |= {"pre": "rc", "preview": "rc", "dev": ".dev"}


# The Python this project runs on (pyproject.toml's requires-python): the model's code is its.
REQUIRES_PYTHON = ">=3.11,<3.12"


def distribution_name(model: str) -> str:
    """The distribution of a model, normalised (PEP 503): house-prices -> house-prices-model."""
    return re.sub(r"[-_.]+", "-", model).lower() + "-model"


def check_can_build(model: str, version: str, models: list[str], where: str) -> None:
    """ConfigError when no wheel can carry ``model`` ``version`` (``import_name``,
    ``wheel_version``), or when another of ``models`` (those of the store ``where``) gives the
    same wheel (house-prices and house_prices are both ``house-prices-model``): installing
    one replaced the other."""
    import_name(model)
    wheel_version(version)
    dist = distribution_name(model)
    same = [m for m in models if m != model and distribution_name(m) == dist]
    if same:
        raise ConfigError(
            f"model '{model}' gives the wheel {dist}, as model '{same[0]}' in store {where} "
            "does: installing one would replace the other; package it under the name "
            f"'{same[0]}', or choose a name that differs in more than case and -, _ or ."
        )


def import_name(model: str) -> str:
    """The import package of model ``model``: house-prices -> house_prices_model."""
    name = distribution_name(model).replace("-", "_")
    if not name.isidentifier():
        raise ConfigError(
            f"model name '{model}' gives the import name '{name}', which Python cannot import: "
            "start PIPELINE_MODEL__NAME with a letter to build a wheel"
        )
    return name


def wheel_version(version: str) -> str:
    """The PEP 440 form of a semantic version: 1.2.0 -> 1.2.0, 1.2.0-rc.1 -> 1.2.0rc1."""
    core, _, pre = version.partition("-")
    if not pre:
        return core
    match = _PRE.fullmatch(pre.lower())
    if match is None:
        raise ConfigError(
            f"model version '{version}' has a pre-release that a wheel cannot express: use "
            "alpha.N, beta.N, rc.N or dev.N (1.2.0-rc.1), or package without --format wheel"
        )
    return f"{core}{_PEP440_PRE[match['kind']]}{int(match['n'] or 0)}"


def wheel_filename(model: str, version: str) -> str:
    """``<import name>-<version>-py3-none-any.whl``, as the spec escapes it."""
    return f"{import_name(model)}-{wheel_version(version)}-{TAG}.whl"


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return f"sha256={digest.decode()}"


def _init_py(model: str, version: str, package_id: str, build_id: str) -> bytes:
    """The generated ``__init__.py``: ids as constants and a lazily loading ``predict``."""
    return f'''"""Model {model} {version} sealed by pipeline: ``predict(frame)`` runs it.

Package {package_id},
build {build_id}.
The files under ``model/`` are verified against their digests and the build id before the
model is first used.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas

    from pipeline.predict import Predictor

__all__ = ["BUILD_ID", "PACKAGE_ID", "__version__", "predict"]
__version__ = {wheel_version(version)!r}
PACKAGE_ID = {package_id!r}
BUILD_ID = {build_id!r}
MODEL_DIR = Path(__file__).resolve().parent / "model"

_lock = threading.Lock()
_predictor: Predictor | None = None


def _load() -> Predictor:
    """The verified model, loaded once (raises pipeline.errors.IntegrityError if modified)."""
    global _predictor
    with _lock:
        if _predictor is None:
            from pipeline.errors import IntegrityError
            from pipeline.package import open_directory
            from pipeline.predict import Predictor

            opened = open_directory(MODEL_DIR, package_id=PACKAGE_ID)
            if opened.build_id != BUILD_ID:
                raise IntegrityError(
                    f"{{MODEL_DIR}} holds build {{opened.build_id[:12]}}, not {{BUILD_ID[:12]}}: "
                    "the installed model was modified; reinstall the wheel"
                )
            _predictor = Predictor.from_opened(opened)
        return _predictor


def predict(frame: pandas.DataFrame, **run_settings: Any) -> pandas.DataFrame:
    """Predictions for every row of ``frame``, one row each, in the order of ``frame``.

    ``run_settings`` are fields of pipeline's RunSettings (threshold, id_column, on_error).
    """
    from pipeline.settings import RunSettings

    run = RunSettings(**run_settings)
    return _load().predict_frame(frame, run, label="frame")
'''.encode()


def build_wheel(
    model: str,
    version: str,
    package_id: str,
    build_id: str,
    files: Mapping[str, bytes],
    *,
    requires: str,
) -> tuple[str, bytes]:
    """The wheel of a verified package's ``files``: its file name and its reproducible bytes."""
    dist, pkg, pep440 = distribution_name(model), import_name(model), wheel_version(version)
    dist_info = f"{pkg}-{pep440}.dist-info"
    entries: list[tuple[str, bytes]] = [
        (f"{pkg}/__init__.py", _init_py(model, version, package_id, build_id))
    ]
    entries += [(f"{pkg}/model/{name}", files[name]) for name in sorted(files)]
    metadata = (
        "Metadata-Version: 2.1\n"
        f"Name: {dist}\n"
        f"Version: {pep440}\n"
        f"Summary: Model {model} {version} (package {package_id[:12]}, build {build_id[:12]})\n"
        f"Requires-Dist: {requires}\n"
        f"Requires-Python: {REQUIRES_PYTHON}\n"
    )
    wheel_meta = f"Wheel-Version: 1.0\nGenerator: pipeline\nRoot-Is-Purelib: true\nTag: {TAG}\n"
    entries += [(f"{dist_info}/METADATA", metadata.encode())]
    entries += [(f"{dist_info}/WHEEL", wheel_meta.encode())]
    record = "".join(f"{n},{_record_hash(d)},{len(d)}\n" for n, d in entries)
    record += f"{dist_info}/RECORD,,\n"
    entries += [(f"{dist_info}/RECORD", record.encode())]
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=DATE_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = FILE_MODE
            info.create_system = UNIX
            zf.writestr(info, data, compresslevel=9)
    return wheel_filename(model, version), raw.getvalue()
