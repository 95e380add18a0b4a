"""Builds in the store: written atomically, identified by their content, verified when read.

A build is a folder ``builds/<id>/`` holding

    weights.pt           torch state_dict (loaded with ``weights_only=True``)
    model.json           the network's ``ModelConfig``
    preprocessing.json   fitted preprocessing state (plain JSON)
    schema.json          input columns, kinds, target, task
    history.json         loss and metrics per epoch (the learning curve)
    metrics.json         validation and test metrics
    config.json          the settings that shape the model (no secrets, no operational knobs)
    provenance.json      ``inputs`` (data digest, split digest, seed, code digest) and
                         ``environment`` (git, versions, CPU, threads)
    curve_<name>.json    plot data from the test predictions (``curves``: ROC, residuals)
    run.json             timestamps and durations
    manifest.json        sha256 and size of every file above, and the build id

The build id is the sha256 of the canonical JSON of the digests of the model files
(``ID_FILES`` and the curves) together with ``provenance.inputs``. Environment and timestamps are
recorded but not hashed: if they changed the model, the weights' digest already says so.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline import __version__
from pipeline.errors import ConfigError, IntegrityError, NotFoundError
from pipeline.store import Store, canonical_json

if TYPE_CHECKING:
    from pipeline.prepare import Prepared

ID_FILES = (
    "weights.pt",
    "model.json",
    "preprocessing.json",
    "schema.json",
    "history.json",
    "metrics.json",
    "config.json",
)
# Plot data computed from the test predictions (``curves``): one file per curve, which ones
# depends on the task; the id covers them as it covers the model files.
CURVE_PREFIX = "curve_"
RECORDED_FILES = ("provenance.json", "run.json")
LATEST = "latest-build"


def build_id(digests: dict[str, str], inputs: dict[str, Any]) -> str:
    """The content id of a build from its model files' digests and its declared inputs."""
    covered = [*ID_FILES, *(n for n in digests if n.startswith(CURVE_PREFIX))]
    payload = {"files": {name: digests[name] for name in covered}, "inputs": inputs}
    return hashlib.sha256(canonical_json(payload)).hexdigest()


@cache
def code_digest() -> str:
    """sha256 over the installed package's Python sources: "the same code", made checkable."""
    root = Path(__file__).parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(Path(__file__).parent), *args],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(runtime: dict[str, Any]) -> dict[str, Any]:
    """Where a build was made: recorded, not hashed."""
    import numpy
    import pandas
    import pyarrow
    import torch

    commit = _git("rev-parse", "HEAD")
    dirty = None if commit is None else bool(_git("status", "--porcelain", "--untracked-files=no"))
    return {
        "git": {"commit": commit, "dirty": dirty},
        "pipeline": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
        "pyarrow": pyarrow.__version__,
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        **runtime,
    }


def weights_bytes(state_dict: dict[str, Any]) -> bytes:
    """A state_dict serialised by torch (deterministic for equal tensors)."""
    import torch

    buf = io.BytesIO()
    torch.save(state_dict, buf)
    return buf.getvalue()


def write_build(store: Store, files: dict[str, bytes], inputs: dict[str, Any]) -> str:
    """Write a build's files atomically under its content id; return the id.

    ``files`` maps every name in ``ID_FILES`` and ``RECORDED_FILES`` to its bytes, except that
    ``provenance.json`` is assembled here from ``inputs`` and ``files["environment"]``.
    """
    env = json.loads(files.pop("environment"))
    files["provenance.json"] = canonical_json({"inputs": inputs, "environment": env})
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    bid = build_id(digests, inputs)
    manifest = {
        "kind": "build",
        "build_id": bid,
        "format": 1,
        "id_covers": [*ID_FILES, f"{CURVE_PREFIX}*.json", "provenance.json#inputs"],
        "files": {n: {"sha256": digests[n], "size": len(files[n])} for n in sorted(files)},
    }
    publish(store, f"builds/{bid}", files, manifest, (LATEST, bid))
    return bid


def publish(
    store: Store,
    key: str,
    files: dict[str, bytes],
    manifest: dict[str, Any],
    ref: tuple[str, str],
) -> None:
    """Publish ``files`` and their manifest as the folder ``key`` in one step, then point the
    reference ``ref`` (name, value) at it: a crash leaves the old state or the new.

    The folder is content-addressed: one already there that matches its own manifest is kept
    as it is (the first writer's record, its timings included); one damaged or edited since
    (what `evaluate` or `tune show` refuse, saying to run the command again) is written again
    here, file by file, rather than kept as it was."""
    whole = {**files, "manifest.json": canonical_json(manifest)}
    with store.staging() as staging:
        for name, data in whole.items():
            (staging / name).write_bytes(data)
        published = store.publish(staging, key)
    if not published:
        _repair(store, key, whole)
    store.write_ref(*ref)


def _repair(store: Store, key: str, files: dict[str, bytes]) -> None:
    """If the existing folder ``key`` does not match its own manifest, make it hold exactly
    ``files``: each file that differs or is missing written again (the manifest last), each
    file it should not hold removed."""
    folder, _, id_ = key.rpartition("/")
    try:
        read_verified(store, folder, id_, "record", "")
        return
    except IntegrityError:
        pass
    for name in sorted(files, key=lambda n: n == "manifest.json"):
        try:
            same = store.read_bytes(f"{key}/{name}") == files[name]
        except KeyError:
            same = False
        if not same:
            store.write(f"{key}/{name}", files[name])
    for name in set(store.list(key)) - set(files):
        store.delete(f"{key}/{name}")


@dataclass(frozen=True)
class Build:
    """A verified build: its files were read once and checked against the manifest."""

    id: str
    manifest: dict[str, Any]
    files: dict[str, bytes]  # every file of the build, manifest.json included

    def json(self, name: str) -> Any:
        """A JSON file of the build (already verified)."""
        return json.loads(self.files[name])


def resolve(store: Store, ref: str | None) -> str:
    """A build id from a full id, a unique prefix (>= 4 hex digits) or ``latest``/None."""
    return resolve_in(store, "builds", ref, LATEST, "build", "pipeline train")


def resolve_in(
    store: Store, folder: str, ref: str | None, latest: str, noun: str, command: str
) -> str:
    """An id of a content-addressed folder (``builds``, ``tunes``) from a full id, a unique
    prefix (>= 4 hex digits) or ``latest``/None (the reference ``latest``); NotFoundError
    naming the ``noun`` and the ``command`` that makes one otherwise."""
    if ref in (None, "", "latest"):
        found = store.read_ref(latest)
        if found is not None and store.exists(f"{folder}/{found}"):
            return found  # one existence check, not a listing of every build
        ids = store.list(folder)
        if found is None and not ids:
            raise NotFoundError(
                f"no {noun} in store {store.uri}: run `{command}` first or set PIPELINE_STORE"
            )
        # The pointer is gone, or names no such folder (a hand edit, a partial copy).
        said = "is missing" if found is None else f"names {found[:20]!r}, no {noun} there"
        name = f"name the {noun} (an id or prefix, as {folder}/ lists them), or " if ids else ""
        raise NotFoundError(
            f"the store's refs/{latest} {said}, and {folder}/ holds {len(ids)} {noun}(s): "
            f"{name}run `{command}` to make a new latest one"
        )
    assert ref is not None
    ids = store.list(folder)
    if ref in ids:
        return ref
    hexed = ref.lower()  # ids are lower-case hex; a copied upper-case one means the same
    matches = [i for i in ids if i.startswith(hexed)] if len(ref) >= 4 else []
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        named = ", ".join(m[:12] for m in sorted(matches)[:5]) + ", ..." * (len(matches) > 5)
        raise NotFoundError(
            f"{noun} prefix '{ref}' is ambiguous ({len(matches)} {noun}s: {named}): give more "
            "digits"
        )
    if len(ref) < 4 and any(i.startswith(hexed) for i in ids):
        raise NotFoundError(
            f"{noun} prefix '{ref}' is too short: give at least 4 hex digits of the id"
        )
    raise NotFoundError(
        f"no {noun} '{ref}' in store {store.uri}: check the id ({folder}/ lists them)"
    )


def read_verified(store: Store, folder: str, id_: str, noun: str, remedy: str) -> dict[str, bytes]:
    """Every file of ``folder/id_``, checked against its manifest before any is used
    (``manifest.json`` included); IntegrityError naming the ``noun`` and the ``remedy``."""
    prefix, what = f"{folder}/{id_}", f"{noun} {id_}"
    try:
        manifest_bytes = store.read_bytes(f"{prefix}/manifest.json")
        listed = json.loads(manifest_bytes).get("files", {})
    except (KeyError, ValueError, AttributeError) as exc:
        raise IntegrityError(f"{what} has no readable manifest: the {noun} is damaged") from exc
    extra = set(store.list(prefix)) - set(listed) - {"manifest.json"}
    if extra:
        raise IntegrityError(f"{what} holds files its manifest does not list: {sorted(extra)}")
    files = {"manifest.json": manifest_bytes}
    for name, meta in listed.items():
        try:
            data = store.read_bytes(f"{prefix}/{name}")
        except KeyError:
            raise IntegrityError(
                f"file {name} of {what} is missing, though its manifest lists it: the {noun} "
                f"is damaged; {remedy}"
            ) from None
        if hashlib.sha256(data).hexdigest() != meta["sha256"]:
            raise IntegrityError(
                f"file {name} of {what} does not match its manifest digest: the {noun} was "
                f"modified or damaged; {remedy}"
            )
        files[name] = data
    return files


def load_build(store: Store, ref: str | None) -> Build:
    """Open a build and verify every file against its manifest before anything is used."""
    bid = resolve(store, ref)
    files = read_verified(store, "builds", bid, "build", "retrain it")
    manifest = json.loads(files["manifest.json"])
    listed = manifest.get("files", {})
    digests = {n: m["sha256"] for n, m in listed.items()}
    inputs = json.loads(files["provenance.json"])["inputs"]
    if build_id(digests, inputs) != bid:
        raise IntegrityError(f"build {bid} does not hash to its id: the build was modified")
    return Build(bid, manifest, files)


EVALUATIONS = "evaluations"


def cv_key(build_id: str, folds: int) -> str:
    """Where ``pipeline evaluate --folds K`` keeps its K-fold results for a build."""
    return f"{EVALUATIONS}/{build_id}/cv-{folds}.json"


def stored_cv(store: Store, build_id: str) -> dict[str, Any] | None:
    """The stored K-fold results of a build with the most folds, or None if none were run."""
    found = []
    for name in store.list(f"{EVALUATIONS}/{build_id}"):
        if name.startswith("cv-") and name.endswith(".json") and name[3:-5].isdigit():
            found.append(int(name[3:-5]))
    if not found:
        return None
    return store.read_json(cv_key(build_id, max(found)))


def check_packaging(build: Build, settings: Any, *, latest: bool, named: bool) -> None:
    """What `pipeline package` checks before sealing ``build`` under the configuration's model
    name: ``check_latest_is_this_model`` when no BUILD was named, ``check_name_is_for`` when
    the name is the default (``named`` False)."""
    if latest:
        check_latest_is_this_model(build, settings)
    if not named:
        check_name_is_for(build, settings)


def check_latest_is_this_model(build: Build, settings: Any) -> None:
    """ConfigError when the latest build (no BUILD given) was trained on other data or for
    another target than this configuration sets (a preset, .env or the environment; defaults
    say nothing): packaged under this model's name, a Titanic build became house-prices 0.4.0
    and was released as such."""
    from pipeline.log import redacted_uri

    data = build.json("config.json")["data"]
    ours = {"source": redacted_uri(settings.data.source), "target": settings.data.target}
    differ = [k for k in ours if settings.is_set("data", k) and data[k] != ours[k]]
    if differ:
        said = ", ".join(f"{k} {data[k]!r}, not {ours[k]!r}" for k in differ)
        raise ConfigError(
            f"the latest build {build.id[:12]} has data {said} as this configuration (model "
            f"{settings.model.name}) sets: name the build to package (pipeline package BUILD)"
        )


def check_name_is_for(build: Build, settings: Any) -> None:
    """ConfigError when ``build`` predicts another target than this configuration's, whose
    model name is the default (no PIPELINE_MODEL__NAME set anywhere): `PIPELINE_PRESET=titanic
    pipeline train`, then a bare `pipeline package BUILD` sealed the Titanic build as
    house-prices. Other data for the same target (a newer file) is the same model."""
    target = build.json("config.json")["data"]["target"]
    if target != settings.data.target:
        raise ConfigError(
            f"build {build.id[:12]} predicts target {target!r}, not {settings.data.target!r}, "
            f"and no PIPELINE_MODEL__NAME is set: it would be packaged as the default model "
            f"{settings.model.name!r}; set PIPELINE_MODEL__NAME (or PIPELINE_PRESET to the "
            "preset it was trained with)"
        )


def build_inputs(data: Prepared, seed: int) -> dict[str, Any]:
    """What the build id covers besides the model files: data, split, seed and code."""
    split = data.split
    return {
        "dataset": {"uri": data.fetched.uri, "sha256": data.fetched.sha256, "rows": data.rows},
        "split": {
            "digest": split.digest(),
            "train": len(split.train),
            "val": len(split.val),
            "test": len(split.test),
        },
        "seed": seed,
        "code": {"version": __version__, "digest": code_digest()},
    }
