"""The object store beside a local folder: package upload, release create, predict cold start.

What a team pays for one shared store reached by URL (``PIPELINE_STORE=s3://...``) instead of a
folder, in the commands a user runs. One run starts its own S3-compatible server on loopback
(SeaweedFS ``weed mini``, started and stopped exactly as the test suite does: ``_s3_server.py``),
trains the same small build into a local folder store and into an ``s3://`` store (Titanic,
15 epochs, one hidden layer of 64: the same seed gives the same build id in both, which is
checked), then times, as fresh `pipeline` processes run round-robin (the store that goes first
alternates), each several times:

- ``pipeline package`` under a new version each time: seals and writes a new archive and its
  sidecar (a new version, so every repeat really uploads; on s3 the archive then comes back
  into the local download cache);
- ``pipeline release create`` of that package: the next number, the history event, ``current``
  moved (on s3 under the lease lock and conditional writes, with the probe of the server);
- ``pipeline predict --release titanic@current`` of one row, in a fresh process with an empty
  download cache (``TMPDIR`` new: a container's first request), then again with the cache the
  first run filled.

Medians and p90s of wall seconds per step and store; the ratios are s3 ÷ local medians. Loopback
leaves out the network a real object store adds (tens of ms a request to a cloud region), so
these are the client's and the protocol's own costs. Package ids, release numbers and the
predictions must agree between the two stores, or the run fails: both must have done the same
work. Raw samples go to ``s3[-quick].json`` beside the report.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import _s3_server
from _common import (
    REPO,
    Child,
    Ratio,
    Report,
    checked,
    clean_env,
    events,
    measured,
    median,
    pipeline_cmd,
    secs,
    standalone,
    table,
)

BUILD = {
    "PIPELINE_PRESET": "titanic",
    "PIPELINE_TRAIN__MAX_EPOCHS": "15",
    "PIPELINE_MODEL__HIDDEN": "[64]",
}
TITANIC = REPO / "src" / "pipeline" / "datasets" / "titanic.csv"
STORES = ("local", "s3")
# The steps timed (their keys in the JSON) and their rows in the table.
PACKAGE, RELEASE, COLD, WARM = "package", "release_create", "predict_cold", "predict_warm"
STEPS = {
    PACKAGE: "`pipeline package` (seal + upload)",
    RELEASE: "`pipeline release create`",
    COLD: "`pipeline predict` 1 row, empty download cache",
    WARM: "`pipeline predict` 1 row, download cache filled",
}
# Targets set here (the issue names none): what a user would notice. Loopback has no network
# latency, so a miss is the client's or the protocol's own cost, worth a look.
TARGETS = {PACKAGE: 2.0, RELEASE: 2.0, COLD: 1.25}
FIGURES = {
    PACKAGE: "package upload: s3 ÷ local",
    RELEASE: "release create: s3 ÷ local",
    COLD: "predict cold start one row: s3 ÷ local",
}


def p90(values: list[float]) -> float:
    """The 90th percentile by nearest rank (the largest of fewer than ten values)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)] if ordered else float("nan")


def _store_envs(workdir: Path, server: _s3_server.S3Server) -> dict[str, dict[str, str]]:
    """Each store's environment: the same build settings, a store of its own, a ``TMPDIR``.

    ``TMPDIR`` keeps the s3 store's download cache (under the system temp folder) inside the
    work folder; the local store gets one too, so both run alike. AWS_* from the parent are
    dropped: only the server's own credentials and endpoint reach the children.
    """
    envs = {}
    for name in STORES:
        root = workdir / name
        (root / "tmp").mkdir(parents=True)
        env = {k: v for k, v in clean_env(root, **BUILD).items() if not k.startswith("AWS_")}
        if name == "s3":
            env.update(server.env("bench"))
        env["TMPDIR"] = str(root / "tmp")
        envs[name] = env
    return envs


def _cli(args: list[str], env: dict[str, str], what: str) -> Child:
    """One `pipeline` command as a fresh, measured process; stop the benchmark if it fails."""
    return checked(measured([*pipeline_cmd(), *args], env), what)


def run(quick: bool, workdir: Path) -> Report:
    """Start the server, train into both stores, time the three steps; report and ratios."""
    repeats = 2 if quick else 10
    t0 = time.perf_counter()
    server = _s3_server.start(timeout=60, parent=workdir)
    started = time.perf_counter() - t0
    try:
        return _measure(workdir, server, repeats, started)
    finally:
        server.stop()


def _measure(workdir: Path, server: _s3_server.S3Server, repeats: int, started: float) -> Report:
    envs = _store_envs(workdir, server)
    row = workdir / "row.csv"
    row.write_text("\n".join(TITANIC.read_text().splitlines()[:2]) + "\n")

    train: dict[str, float] = {}
    builds: dict[str, str] = {}
    for name in STORES:
        id_file = workdir / name / "build.id"
        child = _cli(["train", "--id-file", str(id_file)], envs[name], f"train ({name})")
        train[name], builds[name] = child.seconds, id_file.read_text().strip()
    if builds["local"] != builds["s3"]:
        raise RuntimeError(f"the two stores trained different builds: {builds}")

    samples: dict[str, dict[str, list[float]]] = {s: {n: [] for n in STORES} for s in STEPS}
    package_bytes = 0
    for i in range(repeats):
        order = STORES if i % 2 == 0 else STORES[::-1]  # neither store always goes first
        version = f"1.0.{i}"
        packages: dict[str, str] = {}
        for name in order:
            child = _cli(
                ["package"], {**envs[name], "PIPELINE_MODEL__VERSION": version}, f"package ({name})"
            )
            summary = events(child.output, "package.summary")[-1]
            packages[name], package_bytes = summary["package_id"], summary["bytes"]
            samples[PACKAGE][name].append(child.seconds)
        _agree("package ids", packages)
        refs: dict[str, str] = {}
        for name in order:
            child = _cli(
                ["release", "create", packages[name]], envs[name], f"release create ({name})"
            )
            refs[name] = events(child.output, "release.created")[-1]["release"]
            samples[RELEASE][name].append(child.seconds)
        _agree("releases", refs)
        if refs["local"] != f"titanic@v{i + 1}":
            raise RuntimeError(f"release {refs['local']}, expected titanic@v{i + 1}")
        caches = {name: workdir / name / f"cache-{i}" for name in order}
        predictions: dict[str, str] = {}
        for step in (COLD, WARM):  # the first run fills the (new) cache the second one finds
            for name in order:
                caches[name].mkdir(exist_ok=True)
                out = workdir / name / "predictions.csv"
                child = _cli(
                    ["predict", "--release", "titanic@current", str(row), "-o", str(out)],
                    {**envs[name], "TMPDIR": str(caches[name])},
                    f"predict ({name})",
                )
                samples[step][name].append(child.seconds)
                predictions[name] = out.read_text()
            _agree("predictions", predictions)

    return _report(samples, train, builds["local"], package_bytes, repeats, started)


def _agree(what: str, by_store: dict[str, str]) -> None:
    """Both stores gave the same result: the two sides did the same work."""
    if len(set(by_store.values())) != 1:
        raise RuntimeError(f"the stores disagree on {what}: {by_store}")


def _report(
    samples: dict[str, dict[str, list[float]]],
    train: dict[str, float],
    build_id: str,
    package_bytes: int,
    repeats: int,
    started: float,
) -> Report:
    rows = []
    for step, by_store in samples.items():
        local, s3 = by_store["local"], by_store["s3"]
        rows.append(
            (
                STEPS[step],
                secs(median(local)),
                secs(p90(local)),
                secs(median(s3)),
                secs(p90(s3)),
                f"{median(s3) / median(local):.2f}",
            )
        )
    rows.append(
        (
            "`pipeline train` (once; on s3 also uploads the build)",
            secs(train["local"]),
            "—",
            secs(train["s3"]),
            "—",
            f"{train['s3'] / train['local']:.2f}",
        )
    )
    body = (
        f"Titanic, 15 epochs, hidden [64]: build {build_id[:12]}, package {package_bytes:,} "
        f"bytes. Wall seconds of fresh `pipeline` processes, {repeats} of each, round-robin; "
        f"the s3 store is SeaweedFS `weed mini` on loopback (ready in {started:.1f} s).\n\n"
        + table(
            ["step", "local median", "local p90", "s3 median", "s3 p90", "s3 ÷ local"],
            rows,
            align="lrrrrr",
        )
        + "\n"
    )
    ratios = [
        Ratio(
            "s3",
            FIGURES[step],
            secs(median(samples[step]["s3"])),
            secs(median(samples[step]["local"])),
            median(samples[step]["s3"]) / median(samples[step]["local"]),
            "<=",
            target,
        )
        for step, target in TARGETS.items()
    ]
    data: dict[str, Any] = {
        "settings": BUILD,
        "build_id": build_id,
        "package_bytes": package_bytes,
        "repeats": repeats,
        "server_ready_seconds": started,
        "train_seconds": train,
        "seconds": {
            step: {
                name: {"samples": s, "median": median(s), "p90": p90(s)} for name, s in by.items()
            }
            for step, by in samples.items()
        },
        "cpus": os.cpu_count(),
    }
    return Report("s3", body, ratios, data)


if __name__ == "__main__":
    sys.exit(standalone("s3", run))
