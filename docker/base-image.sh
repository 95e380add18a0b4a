#!/usr/bin/env bash
# Make a local Debian base image with Python 3.11 for machines that cannot pull python:3.11-slim
# (no registry reachable): debootstrap a minimal bookworm with python3 + venv, then import it.
#
#   docker/base-image.sh [ENGINE] [TAG]     defaults: podman, localhost/pipeline-base:bookworm
#
# Idempotent: an existing TAG is kept (it is the cache that makes later builds fast). Needs root
# (debootstrap) and the Debian mirror that apt already uses. Prints TAG on stdout.
set -euo pipefail

engine="${1:-podman}"
tag="${2:-localhost/pipeline-base:bookworm}"
suite=bookworm

if "$engine" image inspect "$tag" >/dev/null 2>&1; then
    echo "$tag"
    exit 0
fi
for tool in debootstrap tar; do
    if ! command -v "$tool" >/dev/null; then
        echo "docker/base-image.sh: '$tool' is missing: install it (apt-get install debootstrap)" \
            "or pass BASE_IMAGE=python:3.11-slim where a registry is reachable" >&2
        exit 1
    fi
done
if [[ $EUID -ne 0 ]]; then
    echo "docker/base-image.sh: debootstrap needs root: run as root, or set BASE_IMAGE" >&2
    exit 1
fi

# The mirror apt is configured with (deb822 sources or a classic sources.list line).
mirror="$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list \
    | grep -oE 'https?://[^ ]+/debian/?$' | head -n 1 || true)"
mirror="${mirror:-http://deb.debian.org/debian}"

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
echo "docker/base-image.sh: debootstrap $suite from $mirror (about a minute)" >&2
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$suite" "$root/rootfs" "$mirror" >"$root/debootstrap.log" 2>&1 || {
    tail -n 20 "$root/debootstrap.log" >&2
    echo "docker/base-image.sh: debootstrap failed (log above)" >&2
    exit 1
}
# Downloaded .debs, package lists and docs are half the tree and nothing at run time needs them.
rm -rf "$root"/rootfs/var/cache/apt/archives/*.deb "$root"/rootfs/var/lib/apt/lists/* \
    "$root"/rootfs/usr/share/doc "$root"/rootfs/usr/share/man "$root"/rootfs/usr/share/locale
tar --numeric-owner -C "$root/rootfs" -c . \
    | "$engine" import --change 'CMD ["python3"]' - "$tag" >/dev/null
echo "$tag"
