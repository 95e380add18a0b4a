"""Which container engine builds and runs the image: Docker where an engine answers, else podman.

Used by docker/build.py and by the image test (tests/container/), so both drive the engine with
the same flags. CONTAINER_ENGINE=docker|podman overrides the choice.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field

# Seen on the project's machines (../shared/ENVIRONMENT.md): podman's default runtime fails on
# setrlimit and cgroups there, runc with explicit limits works; builds need chroot isolation.
_PODMAN_RUN = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
_PODMAN_BUILD = ["--isolation=chroot", "--format", "docker", "--layers"]

INSTALL_HINT = (
    "install podman (Debian/Ubuntu: `sudo apt-get install podman runc debootstrap`), or start a "
    "Docker engine, or set CONTAINER_ENGINE"
)


class EngineError(RuntimeError):
    """No usable container engine, or an engine command failed."""


@dataclass(frozen=True)
class Engine:
    """A container CLI and the extra flags it needs here for `build` and `run`."""

    name: str
    build_flags: list[str] = field(default_factory=list)
    run_flags: list[str] = field(default_factory=list)

    @property
    def is_podman(self) -> bool:
        """Whether this is podman (a local base image is made with debootstrap for it)."""
        return self.name == "podman"

    def cmd(self, *args: str) -> list[str]:
        """The argv of an engine command."""
        return [self.name, *args]

    def run(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """Run an engine command, capturing its output; raise EngineError when it fails."""
        done = subprocess.run(
            self.cmd(*args), capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and done.returncode != 0:
            raise EngineError(
                f"`{self.name} {' '.join(args[:3])} ...` failed ({done.returncode}): "
                f"{done.stderr.strip()[-2000:]}"
            )
        return done


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0 and bool(done.stdout.strip())


def _podman() -> Engine:
    run_flags = list(_PODMAN_RUN)
    if shutil.which("runc"):
        run_flags[:0] = ["--runtime", "runc"]
    return Engine("podman", list(_PODMAN_BUILD), run_flags)


def detect() -> Engine:
    """The engine to use, or EngineError saying what to install."""
    wanted = os.environ.get("CONTAINER_ENGINE", "").strip()
    if wanted not in ("", "docker", "podman"):
        raise EngineError(f"CONTAINER_ENGINE={wanted!r}: expected docker or podman")
    if wanted in ("", "docker") and _docker_answers():
        return Engine("docker")
    if wanted == "docker":
        raise EngineError("CONTAINER_ENGINE=docker, but no Docker engine answers `docker info`")
    if shutil.which("podman"):
        return _podman()
    raise EngineError(
        "no container engine: no Docker engine answers `docker info` and podman is not "
        f"installed; {INSTALL_HINT}"
    )
