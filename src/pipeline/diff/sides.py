"""The two sides of a diff: a build, a release or a package, each down to one build's verified
files. The resolvers of releases and packages are imported where they are used."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pipeline import artifacts
from pipeline.errors import ConfigError, NotFoundError
from pipeline.store import Store


def resolve(store: Store, a: str | None, b: str | None, model_name: str) -> list[dict[str, Any]]:
    """Both sides: A defaults to ``<model_name>@current``, B to the latest build, which must be
    of A's model (``_latest_is_of_a_model``).

    Each side is ``{"asked", "kind", "build_id", "release", "package_id", "deployed",
    "files"}`` (``deployed``: a release's version and run settings, else None); a default
    that cannot be resolved is a NotFoundError naming it and what to do.
    """
    sides = []
    for label, arg, default in (("A", a, f"{model_name}@current"), ("B", b, "latest")):
        try:
            sides.append(resolve_one(store, arg or default, model_name))
        except NotFoundError as exc:
            if arg:
                raise
            what = f"the current release of {model_name}" if label == "A" else "the latest build"
            raise NotFoundError(
                f"{label} defaults to {what}, and {exc.message}; or name {label}: "
                "`pipeline diff A [B]`"
            ) from None
    if not b:
        _latest_is_of_a_model(*sides)
    return sides


def _latest_is_of_a_model(a: dict[str, Any], b: dict[str, Any]) -> None:
    """NotFoundError when B, defaulted to the latest build, predicts another target than A:
    another model's build trained last in a shared store. Builds do not record a model name
    (packages take theirs), so the target tells models apart, as ``artifacts.check_name_is_for``
    does; `diff` of house-prices@current compared it with a Titanic build, every verdict
    "incomparable", exit 0."""
    import json

    target_a, target_b = (json.loads(s["files"]["config.json"])["data"]["target"] for s in (a, b))
    if target_a != target_b:
        raise NotFoundError(
            f"B defaults to the latest build, and the latest build {b['build_id'][:12]} predicts "
            f"{target_b!r}, not {target_a!r} as {a['release'] or a['asked']}: it is another "
            "model's; name B, this model's build: `pipeline diff A B`"
        )


def resolve_one(store: Store, ref: str, model_name: str) -> dict[str, Any]:
    """One side: a release reference, a package (id, prefix, ``.tar.gz``) or a build."""
    from pipeline import releases
    from pipeline.releases.refs import PACKAGE_ID

    side: dict[str, Any] = {"asked": ref, "release": None, "package_id": None, "deployed": None}
    if ref.endswith(".tar.gz") or os.sep in ref:  # releases.resolve_package's rule for a path
        return {**side, **_package_file(store, ref)}
    if releases.is_ref(ref) or "@" in ref:  # a malformed name@... gets parse_ref's message
        release = releases.show(store, ref, model_name)
        opened = releases.released_package(store, release)
        side.update(kind="release", release=release.ref, package_id=release.package_id)
        side["deployed"] = {"version": release.version, "run": release.run}  # predict's
        return {**side, "build_id": opened.build_id, "files": opened.files}
    # Hex digits name a build first (as everywhere else), a package when no build id has them:
    # a unique prefix of 4+ digits, as `release create` and `predict --package` take (this took
    # 8+, so `report 8f16` of a package said "no build").
    if PACKAGE_ID.match(ref.lower()) and not any(
        bid.startswith(ref) for bid in store.list("builds")
    ):
        try:
            sidecar = releases.find_package(store, ref)
        except NotFoundError:
            raise NotFoundError(
                f"no build or package '{ref}' in store {store.uri}: check the id (builds/ and "
                "packages/*/*.json list them) or PIPELINE_STORE"
            ) from None
        opened = _open_in_store(store, sidecar)
        side.update(kind="package", package_id=opened.package_id)
        return {**side, "build_id": opened.build_id, "files": opened.files}
    build = artifacts.load_build(store, ref)
    return {**side, "kind": "build", "build_id": build.id, "files": build.files}


def _package_file(store: Store, ref: str) -> dict[str, Any]:
    """A ``.tar.gz`` on disk (anywhere), or in the store's packages folder by its location."""
    from pipeline import package, releases

    if Path(ref).is_file():
        with Path(ref).open("rb") as fh:
            gzipped = fh.read(2) == package.GZIP_MAGIC
        if not gzipped and not ref.endswith(".tar.gz"):  # an id file, or a CSV: not a package
            raise ConfigError(
                f"{ref} is a file but no package archive: give a build id or prefix, a release "
                f"(name@vN, current) or a package (.tar.gz); for the id an --id-file holds, "
                f'pass "$(cat {ref})"'
            )
        opened = package.open_package(Path(ref))
    elif store.key_of(ref) is None:
        raise NotFoundError(f"package file {ref} does not exist: check the path")
    else:
        opened = _open_in_store(store, releases.resolve_package(store, ref))
    return {"kind": "package", "package_id": opened.package_id, "build_id": opened.build_id,
            "files": opened.files}  # fmt: skip


def _open_in_store(store: Store, sidecar: dict[str, Any]) -> Any:
    """The verified package a sidecar names (``package.OpenedPackage``)."""
    from pipeline import package

    key = f"packages/{sidecar['name']}/{sidecar['version']}.tar.gz"
    try:
        return package.open_package(store.local_file(key))
    except KeyError:
        raise NotFoundError(
            f"package {sidecar['package_id'][:12]} is recorded in {key[:-7]}.json, but {key} is "
            f"not in store {store.uri}: restore it or package the build again"
        ) from None
