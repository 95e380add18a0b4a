#!/usr/bin/env bash
# Make sure a headless Chromium is there for `make test-browser` (tests/browser.py drives it over
# the DevTools pipe): $PIPELINE_TEST_BROWSER, else the first of chromium-headless-shell, chromium,
# chromium-browser, google-chrome on PATH, as tests/browser.py picks it. On CI (CI=true) as root
# on Debian/Ubuntu, chromium-headless-shell (else chromium) is installed when none is found;
# anywhere else this fails with what to install. It never lets the browser tests pass silently.
set -euo pipefail

find_browser() {
    if [[ -n "${PIPELINE_TEST_BROWSER:-}" ]]; then
        command -v "$PIPELINE_TEST_BROWSER"
        return
    fi
    local name
    for name in chromium-headless-shell chromium chromium-browser google-chrome; do
        command -v "$name" && return
    done
    return 1
}

report() {
    echo "browser: $1 ($(timeout 20 "$1" --version 2>/dev/null || echo 'version unknown'))"
}

if browser="$(find_browser)"; then
    report "$browser"
    exit 0
fi
if [[ -n "${PIPELINE_TEST_BROWSER:-}" ]]; then
    # A named browser that is missing is a mistake to fix, not a reason to install another.
    echo "error: PIPELINE_TEST_BROWSER=$PIPELINE_TEST_BROWSER is not an executable on PATH." >&2
    exit 1
fi
if [[ "${CI:-}" == "true" && $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # The headless shell is the small package made for this; older releases have only chromium.
    package=chromium-headless-shell
    apt-cache show "$package" >/dev/null 2>&1 || package=chromium
    echo "browser: none; installing $package (CI=true)" >&2
    apt-get install -y -qq "$package" >/dev/null
    if browser="$(find_browser)"; then
        report "$browser"
        exit 0
    fi
    echo "error: installed $package but found no browser on PATH." >&2
    exit 1
fi
echo "error: no headless Chromium for the browser tests. Install chromium-headless-shell" \
    "(apt-get install chromium-headless-shell, or chromium) or set PIPELINE_TEST_BROWSER." >&2
exit 1
