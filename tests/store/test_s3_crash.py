"""SIGKILL at seeded random moments of train -> package -> release against an s3:// store.

The local-folder test's driver and checks (tests/test_crash_safety.py) run unchanged on the
object store: a kill can land between a folder's uploads and the exclusive create of its
``.published`` marker, between a release record and its history event, or inside a lease.
"""

from __future__ import annotations

import random
import uuid
from pathlib import Path
from typing import Any

import pytest
from tests.store.test_s3_chain import _open
from tests.test_crash_safety import Zygote, sigkill_at_random_moments

from pipeline.store.s3 import PENDING, S3Store, _invisible

pytestmark = [pytest.mark.s3, pytest.mark.slow]


def test_sigkill_at_12_seeded_moments_on_s3_leaves_every_artifact_verifiable(
    s3_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """12 kills -9 (4 per stage, moments drawn from a fixed seed): after each every build,
    package and release the store shows verifies; folders whose publish was cut stay out of
    every listing; a last uninterrupted chain succeeds on what was left."""
    s3 = s3_server.env(f"crash-{uuid.uuid4().hex[:8]}")
    store = _open(s3, monkeypatch)
    assert isinstance(store, S3Store)
    rng = random.Random(20261203)
    plan = ["train"] * 4 + ["package"] * 4 + ["release"] * 4
    rng.shuffle(plan)
    aws = {k: v for k, v in s3.items() if k != "PIPELINE_STORE"}
    zygote = Zygote(s3["PIPELINE_STORE"], tmp_path, aws)
    try:
        landed = sigkill_at_random_moments(zygote, store, rng, plan)
    finally:
        zygote.close()
    assert sum(landed.values()) >= 12  # a kill after its stage ended is tried again
    keys = store._keys("")
    print(f"publishes cut and left invisible: {sorted(_invisible(keys))}")
    for folder in _invisible(keys):  # cut publishes: on the server, and listed nowhere
        parent, name = folder.rsplit("/", 1)
        assert f"{folder}/{PENDING}" in keys
        assert name not in store.list(parent) and not store.exists(folder)
        assert all(not key.startswith(f"{folder}/") for key in store.walk(parent))
