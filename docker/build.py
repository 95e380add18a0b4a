"""Build the run-stage image from a release in the store: what `make docker-build` runs.

    python docker/build.py [--release REF | --no-release] [--tag TAG] [--ref-file FILE]

1. Pick the engine: Docker where an engine answers `docker info`, podman otherwise.
2. The base image: BASE_IMAGE if set; else python:3.11-slim with Docker, or with podman a local
   Debian base made once by docker/base-image.sh (no registry needs to be reachable).
3. Fill the wheelhouse docker/wheels/ from the host's pip, so the build installs exactly the
   pinned files (the CPU torch build included) with no network.
4. The release to bake: REF, else PIPELINE_RELEASE, else <PIPELINE_MODEL__NAME>@current. If the
   store has none, run the build chain first: train → evaluate → package → release create.
5. Snapshot the sources, the wheelhouse and that release into a build context of their own
   (build/docker-context-*, or --context DIR), build from it, and tag the image
   <repository>/<model>:<version>-<package id[:12]>. The snapshot is taken first, so edits made
   to the checkout while the build runs never reach the image half-way.

The image reference goes to stdout (and to --ref-file); progress and the summary (size, time)
go to stderr. Settings come from the environment, as for every pipeline command.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from container_engine import Engine, EngineError, detect

REPO = Path(__file__).resolve().parents[1]
WHEELS = REPO / "docker" / "wheels"
# What the Dockerfile reads from its context (besides docker/wheels and docker/release).
SOURCES = ["requirements.txt", "pyproject.toml", "README.md", ".dockerignore", "src"]
DEFAULT_BASE = "python:3.11-slim"
LOCAL_BASE = "localhost/pipeline-base:bookworm"
CPU_TORCH_HINT = (
    "set PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu so that pip resolves "
    "torch==2.13.0 to the CPU build"
)


def say(message: str) -> None:
    """Progress for people, on stderr (stdout carries the image reference)."""
    print(f"docker-build: {message}", file=sys.stderr, flush=True)


class BuildError(RuntimeError):
    """A step failed; the message says what to do."""


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    # docker/wheels/ is shared by every build from this checkout.
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _clear(folder: Path) -> None:
    for entry in folder.iterdir():
        if entry.name in (".gitignore", ".lock"):  # the folder's own files
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


# --- base image and wheelhouse ----------------------------------------------------------------


def base_image(engine: Engine) -> str:
    """BASE_IMAGE, python:3.11-slim for Docker, or the local debootstrap base for podman."""
    chosen = os.environ.get("BASE_IMAGE", "").strip()
    if chosen:
        return chosen
    if not engine.is_podman:
        return DEFAULT_BASE
    script = REPO / "docker" / "base-image.sh"
    done = subprocess.run(
        ["bash", str(script), engine.name, LOCAL_BASE],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise BuildError("no base image (see above); set BASE_IMAGE to one the engine has")
    return done.stdout.strip().splitlines()[-1]


def _pip(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise BuildError(f"pip {args[0]} failed:\n{done.stdout[-3000:]}")


def wheelhouse(sources: Path) -> None:
    """Fill docker/wheels/ with every wheel ``sources``' requirements.txt and build backend pin."""
    requirements = (sources / "requirements.txt").read_bytes()
    pyproject = tomllib.loads((sources / "pyproject.toml").read_text())
    backend: list[str] = pyproject["build-system"]["requires"]
    key = hashlib.sha256(
        requirements + json.dumps([backend, sys.version_info[:2]]).encode()
    ).hexdigest()
    stamp = WHEELS / ".stamp"
    if stamp.exists() and stamp.read_text().strip() == key:
        return
    say("filling the wheelhouse docker/wheels/ from requirements.txt (host pip)")
    started = time.monotonic()
    _clear(WHEELS)
    # `pip wheel` also builds a wheel for any pin published only as an sdist: the image build
    # then needs no compiler and no network.
    _pip(
        "wheel",
        "--quiet",
        "--no-deps",
        "--wheel-dir",
        str(WHEELS),
        "-r",
        str(sources / "requirements.txt"),
    )
    _pip("download", "--quiet", "--only-binary=:all:", "--dest", str(WHEELS), *backend)
    torch = sorted(WHEELS.glob("torch-*.whl"))
    if torch and not all("+cpu" in w.name for w in torch):
        raise BuildError(
            f"the wheelhouse holds a CUDA torch build ({torch[0].name}): {CPU_TORCH_HINT}"
        )
    stamp.write_text(key + "\n")
    say(f"wheelhouse ready in {time.monotonic() - started:.0f} s")


# --- the release ------------------------------------------------------------------------------


def _pipeline(*args: str) -> None:
    # The chain's own log stream goes to stderr: stdout is this script's result.
    done = subprocess.run([sys.executable, "-m", "pipeline", *args], stdout=sys.stderr, check=False)
    if done.returncode != 0:
        raise BuildError(f"`pipeline {' '.join(args)}` failed with exit code {done.returncode}")


def build_chain(workdir: Path) -> str:
    """train → evaluate → package → release create; the new release's reference."""
    say("the store has no release: running train → evaluate → package → release create")
    ids = {name: workdir / f"{name}.id" for name in ("build", "package", "release")}
    _pipeline("train", "--id-file", str(ids["build"]))
    build_id = ids["build"].read_text().strip()
    _pipeline("evaluate", build_id)
    _pipeline("package", build_id, "--id-file", str(ids["package"]))
    package_id = ids["package"].read_text().strip()
    _pipeline("release", "create", package_id, "--id-file", str(ids["release"]))
    return ids["release"].read_text().strip()


def find_release(ref: str | None, workdir: Path) -> tuple[Any, Any, dict[str, Any]]:
    """The store, the release to bake (running the chain if there is none) and its package."""
    from pipeline import releases
    from pipeline.errors import NotFoundError
    from pipeline.settings import load
    from pipeline.store import Store

    settings = load().settings
    store = Store.from_uri(settings.store)
    wanted = ref or settings.release or f"{settings.model.name}@current"
    try:
        release = releases.show(store, wanted, settings.model.name)
    except NotFoundError:
        if ref or settings.release:
            raise  # a named release that does not exist is the user's mistake, not a cue to train
        release = releases.show(store, build_chain(workdir), settings.model.name)
    return store, release, releases.find_package(store, release.package_id)


def stage(store: Any, release: Any, sidecar: dict[str, Any], into: Path) -> None:
    """Copy the model's release log and the release's package into ``into`` (docker/release/).

    The whole ``releases/<name>/`` folder goes in (records, history, current: a few KB), because
    the releases module decides from all of it which records are releases; only the baked
    release's package is copied, so the image can run that release and no other.
    """
    from pipeline.errors import IntegrityError
    from pipeline.store import sha256_file

    package = f"packages/{sidecar['name']}/{sidecar['version']}"
    archive = store.local_file(f"{package}.tar.gz")
    if sha256_file(archive) != release.package_id:
        raise IntegrityError(f"{archive} does not match package id {release.package_id}")
    (into / package).parent.mkdir(parents=True)
    shutil.copyfile(archive, into / f"{package}.tar.gz")
    shutil.copyfile(store.local_file(f"{package}.json"), into / f"{package}.json")
    # walk() leaves out dot files (the store's locks and temp files): not part of any release.
    for key in store.walk(f"releases/{release.name}"):
        (into / key).parent.mkdir(parents=True, exist_ok=True)
        (into / key).write_bytes(store.read_bytes(key))


def snapshot(context: Path) -> None:
    """Copy what the image is built from into ``context``: the checkout can change meanwhile."""
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in SOURCES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=skip)
        else:
            shutil.copy2(source, context / name)
    for folder in ("wheels", "release"):
        (context / "docker" / folder).mkdir(parents=True)


def _link_wheels(context: Path) -> None:
    # Hard links: the wheelhouse is ~300 MB and never changes in place (it is cleared, then
    # filled); a copy only where the context is on another file system.
    for wheel in WHEELS.glob("*.whl"):
        target = context / "docker" / "wheels" / wheel.name
        try:
            os.link(wheel, target)
        except OSError:
            shutil.copy2(wheel, target)


# --- the build --------------------------------------------------------------------------------


def _git_revision() -> str:
    done = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def build(engine: Engine, context: Path, base: str, tag: str, labels: dict[str, str]) -> None:
    """Run the engine's build with the build arguments the Dockerfile declares."""
    args = {"BASE_IMAGE": base, "PIP_NO_INDEX": "1", **labels}
    argv = engine.cmd("build", *engine.build_flags, "--file", str(REPO / "Dockerfile"))
    for name, value in args.items():
        argv += ["--build-arg", f"{name}={value}"]
    argv += ["--tag", tag, str(context)]
    say(f"{' '.join(argv[:2])} ... --tag {tag}")
    done = subprocess.run(argv, stdout=sys.stderr, check=False)
    if done.returncode != 0:
        raise BuildError(f"{engine.name} build failed with exit code {done.returncode}")


def image_size(engine: Engine, tag: str) -> int:
    """The image's size in bytes as the engine reports it."""
    done = engine.run("image", "inspect", "--format", "{{.Size}}", tag)
    return int(done.stdout.strip())


def main(argv: list[str] | None = None) -> int:
    """Build the image; print its reference."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--release", help="release to bake (name@vN or name@current)")
    which.add_argument(
        "--no-release",
        action="store_true",
        help="bake nothing: run with a mounted store and PIPELINE_RELEASE",
    )
    parser.add_argument("--repository", default="pipeline", help="image repository prefix")
    parser.add_argument("--tag", help="image reference (default <repo>/<model>:<ver>-<pkg12>)")
    parser.add_argument("--ref-file", type=Path, help="also write the image reference here")
    parser.add_argument(
        "--context",
        type=Path,
        help="build context to create and keep (default: a temporary one under build/)",
    )
    opts = parser.parse_args(argv)

    from pipeline import __version__
    from pipeline.errors import PipelineError

    started = time.monotonic()
    with contextlib.ExitStack() as cleanup:
        if opts.context:
            context = opts.context
            if context.exists() and any(context.iterdir()):
                say(f"error: --context {context} is not empty: name a new folder")
                return 1
            context.mkdir(parents=True, exist_ok=True)
        else:
            (REPO / "build").mkdir(exist_ok=True)
            context = Path(
                cleanup.enter_context(
                    tempfile.TemporaryDirectory(prefix="docker-context-", dir=REPO / "build")
                )
            )
        try:
            snapshot(context)
            engine = detect()
            say(f"engine: {engine.name}")
            base = base_image(engine)
            with _exclusive(WHEELS / ".lock"):
                wheelhouse(context)
                _link_wheels(context)
            labels = {
                "PIPELINE_VERSION": __version__,
                "VCS_REF": _git_revision(),
                "CREATED": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            if opts.no_release:
                tag = opts.tag or f"{opts.repository}/pipeline:{__version__}"
                labels["MODEL_VERSION"] = __version__
            else:
                chain = Path(cleanup.enter_context(tempfile.TemporaryDirectory()))
                store, release, sidecar = find_release(opts.release, chain)
                stage(store, release, sidecar, context / "docker" / "release")
                tag = opts.tag or (
                    f"{opts.repository}/{release.name}:{release.version}-{release.package_id[:12]}"
                )
                labels |= {
                    "RELEASE": release.ref,
                    "MODEL_NAME": release.name,
                    "MODEL_VERSION": release.version,
                    "PACKAGE_ID": release.package_id,
                    "BUILD_ID": release.build_id,
                }
                say(f"baking {release.ref} (package {release.package_id[:12]})")
            build(engine, context, base, tag, labels)
            size = image_size(engine, tag)
        except (BuildError, EngineError, PipelineError) as exc:
            say(f"error: {exc}")
            return 1
    say(f"built {tag}: {size / 1e6:.0f} MB, in {time.monotonic() - started:.0f} s")
    if opts.ref_file:
        opts.ref_file.write_text(tag + "\n")
    print(tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
