"""What a user names: release references (``name@vN``, ``name@current``) and package ids.

Parsing and checking the names that ``release``, ``predict``, ``serve``, ``report`` and ``diff``
take, and finding a package's sidecar (``packages/<name>/<version>.json``) by id, id prefix or
archive location. Only the ``Store`` interface is used.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

from pipeline.errors import ConfigError, IntegrityError, NotFoundError
from pipeline.store import Store
from pipeline.store.numbered import Key as _Key
from pipeline.store.numbered import read_json as _read_json

if TYPE_CHECKING:
    from pipeline.package import OpenedPackage

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# A package id or the unique prefix of one, 4+ digits as a build id's (``diff`` and ``report``
# read hex digits as a build first, then as this).
PACKAGE_ID = re.compile(r"^[0-9a-f]{4,64}$")
_SHA = re.compile(r"^[0-9a-f]{64}$")
_REF = re.compile(r"^(?:(?P<name>[^@\s]+)@)?(?:v(?P<number>[1-9][0-9]*)|(?P<current>current))$")
_SIDECAR_KEYS = ("name", "version", "package_id", "build_id")
REF_HELP = "expected name@vN or name@current (or vN / current with PIPELINE_MODEL__NAME)"


# --- references -------------------------------------------------------------------------------


def check_name(name: str) -> str:
    """``name`` if it can name a release folder, else ConfigError."""
    if not _NAME.match(name):
        raise ConfigError(
            f"release name '{name}' is not usable: expected letters, digits, '.', '_' or '-' "
            "(as in PIPELINE_MODEL__NAME=house-prices)"
        )
    return name


def is_ref(text: str) -> bool:
    """Whether ``text`` reads as a release reference rather than a build or package id."""
    return _REF.match(text.strip()) is not None


def parse_ref(ref: str, default_name: str | None = None) -> tuple[str, int | None]:
    """Split ``name@vN`` / ``name@current`` (or ``vN`` / ``current`` with ``default_name``).

    Returns ``(name, N)``, with ``None`` for the current release.
    """
    match = _REF.match(ref.strip())
    if match is None:
        raise ConfigError(f"malformed release reference '{ref}': {REF_HELP}")
    name = match["name"] or default_name
    if not name:
        raise ConfigError(f"release reference '{ref}' names no model: {REF_HELP}")
    number = int(match["number"]) if match["number"] else None
    return check_name(name), number


def parse_number(text: str) -> int:
    """``vN`` or ``N`` as a release number (for ``--to``)."""
    match = re.fullmatch(r"v?([1-9][0-9]*)", text.strip())
    if match is None:
        raise ConfigError(f"malformed release number '{text}': expected vN, e.g. --to v3")
    return int(match[1])


def rollback_target(to: str, name: str | None, default_name: str) -> tuple[str, int]:
    """The model and release number ``--to`` names: ``vN`` / ``N`` of ``name`` (default: the
    settings' model name), or a whole reference ``name@vN`` as `release list` prints it, whose
    name must agree with ``--name`` when both are given."""
    if "@" not in to:
        return name or default_name, parse_number(to)  # rollback checks the name
    model, number = parse_ref(to)
    if number is None:
        raise ConfigError(
            f"--to {to} names the current release, which is where a rollback starts: name an "
            "earlier one (--to vN), or leave --to out for the release before it"
        )
    if name is not None and name != model:
        raise ConfigError(
            f"--to {to} is a release of {model}, but --name says {name}: give one model"
        )
    return model, number


# --- packages ---------------------------------------------------------------------------------


def _read_sidecar(key: _Key) -> dict[str, Any]:
    try:
        data = _read_json(key)
    except KeyError:
        raise NotFoundError(
            f"package sidecar {key} does not exist: package the build first (`pipeline package`)"
        ) from None
    # packages/<name>/<version>.json: a sidecar claiming another name or version, or an id that
    # is no sha256, would send readers to another archive (or out of the store).
    parts = key.key.split("/")
    if not (
        isinstance(data, dict)
        and all(isinstance(data.get(k), str) for k in _SIDECAR_KEYS)
        and parts[1:] == [data["name"], f"{data['version']}.json"]
        and _SHA.match(data["package_id"])
        and _SHA.match(data["build_id"])
    ):
        raise IntegrityError(
            f"package sidecar {key} is malformed: expected string fields {list(_SIDECAR_KEYS)} "
            "naming its own folder and file, with sha256 ids; run `pipeline package` for its "
            "build again to rewrite it"
        )
    return data


def find_package(store: Store, ref: str) -> dict[str, Any]:
    """The sidecar of the package whose id is ``ref`` or starts with it (>= 4 hex digits)."""
    ref = ref.strip().lower()
    if not PACKAGE_ID.match(ref):
        raise ConfigError(
            f"'{ref}' is not a package id: expected its sha256 or a prefix of at least 4 hex "
            "digits, or the path of a .tar.gz in the store's packages folder"
        )
    root = _Key(store, "packages")
    found: dict[str, dict[str, Any]] = {}
    for model in store.list(root.key):
        for entry in store.list((root / model).key):
            if not entry.endswith(".json"):
                continue
            sidecar = _read_sidecar(root / model / entry)
            if sidecar["package_id"].startswith(ref):
                found.setdefault(sidecar["package_id"], sidecar)
    if not found:
        built = store.exists(f"builds/{ref}/manifest.json") if len(ref) == 64 else False
        raise NotFoundError(
            f"build {ref[:12]} is a build, not a package: run `pipeline package {ref[:12]}` "
            "and release the package id it prints"
            if built
            else f"no package with id {ref} in {root} (searched packages/*/*.json): "
            "check the id, PIPELINE_STORE, or package a build first"
        )
    if len(found) > 1:
        named = [f"{p[:12]} ({s['name']} {s['version']})" for p, s in sorted(found.items())]
        # Exit 8, as an ambiguous build prefix is: no one package has that id.
        raise NotFoundError(
            f"package id prefix {ref} is ambiguous ({len(found)} packages match: "
            f"{', '.join(named[:5])}{', ...' if len(named) > 5 else ''}): give more digits"
        )
    return next(iter(found.values()))


def resolve_package(store: Store, arg: str) -> dict[str, Any]:
    """The sidecar for ``arg``: a package id/prefix, or where its ``.tar.gz`` is in the store.

    The location is a path for a folder store (a URI for an object store): ``Store.key_of``.
    """
    if not (arg.endswith(".tar.gz") or os.sep in arg):
        return find_package(store, arg)
    key = store.key_of(arg)
    if key is None or not key.startswith("packages/") or not key.endswith(".tar.gz"):
        raise ConfigError(
            f"'{arg}' is not a package: expected a .tar.gz inside {store.location('packages')}, "
            "or a package id"
        )
    if not store.exists(key):
        raise NotFoundError(
            f"package {store.location(key)} does not exist: check the path or PIPELINE_STORE"
        )
    return _read_sidecar(_Key(store, key.removesuffix(".tar.gz") + ".json"))


def open_stored(store: Store, key: str) -> OpenedPackage:
    """``open_package`` of the archive at ``key``. An object store's local copy that does not
    verify is downloaded once more (a copy damaged on this machine failed every later run,
    naming the copy), and a failure names the object, never the local copy."""
    from pipeline.package import open_package

    path = store.local_file(key)
    try:
        return open_package(path)
    except IntegrityError:
        again = store.local_file(key, again=True)
        try:
            return open_package(again)
        except IntegrityError as exc:
            message = exc.message.replace(str(again), store.location(key))
            raise IntegrityError(message) from None


def check_archive(store: Store, package: dict[str, Any]) -> None:
    """IntegrityError unless the package's archive opens and verifies as the package its record
    names: a damaged archive was released and made current, and every predict then failed."""
    key = f"packages/{package['name']}/{package['version']}.tar.gz"
    short = package["package_id"][:12]
    try:
        opened = open_stored(store, key)
    except KeyError:
        raise IntegrityError(
            f"package {short} has a record but no archive ({key}): package its build again"
        ) from None
    except IntegrityError as exc:
        # The archive's own message already says what to do (package again, or restore it).
        again = "" if "package its build again" in exc.message else "; package its build again"
        raise IntegrityError(f"package {short} is not released: {exc.message}{again}") from None
    if (opened.package_id, opened.build_id) != (package["package_id"], package["build_id"]):
        raise IntegrityError(
            f"package {short} is not released: its archive {key} is another package "
            f"({opened.package_id[:12]}); package its build again"
        )


def released_package(store: Store, release: Any) -> OpenedPackage:
    """The package a release record names (``release``: its ``ref``, ``package_id``,
    ``build_id`` and ``version``), opened and checked against the record: a ``NotFoundError``
    when its archive is gone, an ``IntegrityError`` when the archive was replaced or the record
    edited (its build or version not the package's). Every command that takes a release reads
    it through here: `evaluate` of an edited record had re-tested another build."""
    sidecar = find_package(store, release.package_id)
    key = f"packages/{sidecar['name']}/{sidecar['version']}.tar.gz"
    try:
        opened = open_stored(store, key)
    except KeyError:
        raise NotFoundError(
            f"release {release.ref} names package {release.package_id[:12]}, but {key} is not in "
            f"store {store.uri}: restore it or roll back"
        ) from None
    if opened.package_id != release.package_id:
        raise IntegrityError(
            f"package {store.location(key)} has id {opened.package_id[:12]} but release "
            f"{release.ref} names {release.package_id[:12]}: the archive was replaced; restore it"
        )
    recorded = (release.build_id, release.version)
    if (opened.build_id, opened.version) != recorded:
        raise IntegrityError(
            f"release {release.ref} records build {recorded[0][:12]} version {recorded[1]}, "
            f"but its package {opened.package_id[:12]} is build {opened.build_id[:12]} version "
            f"{opened.version}: the release record was modified; roll back or restore it"
        )
    return opened
