#!/usr/bin/env bash
# Make sure a container engine is there for `make docker-test`: a Docker engine that answers, or
# podman. On CI (CI=true) as root on Debian/Ubuntu, podman is installed when neither is found;
# anywhere else this fails with what to install. It never lets the image test pass silently.
set -euo pipefail

if command -v docker >/dev/null && timeout 20 docker info >/dev/null 2>&1; then
    echo "container engine: docker"
    exit 0
fi
# podman runs with runc here, and the local base image is made with debootstrap: all three.
packages=(podman runc debootstrap)
if command -v podman >/dev/null && command -v runc >/dev/null && command -v debootstrap >/dev/null
then
    echo "container engine: podman"
    exit 0
fi
if [[ "${CI:-}" == "true" && $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "container engine: none; installing ${packages[*]} (CI=true)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${packages[@]}" >/dev/null
    podman --version
    exit 0
fi
echo "error: no container engine: no Docker engine answers 'docker info' and podman is not" \
    "installed. Install podman (apt-get install ${packages[*]}) or start Docker." >&2
exit 1
