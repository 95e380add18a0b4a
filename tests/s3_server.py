"""The suite's real S3-compatible server on loopback (SeaweedFS ``weed mini``), for `s3` tests.

The code is ``bench/_s3_server.py``, shared with ``bench/s3.py`` so that the benchmark measures
against exactly the server the tests check (same recipe, same readiness, same stop by process
id); this module is the tests' name for it (the ``s3_server`` fixture in conftest.py uses it).
"""

from __future__ import annotations

from bench._s3_server import ACCESS_KEY, BUCKET, REGION, WEED, S3Server, start

__all__ = ["ACCESS_KEY", "BUCKET", "REGION", "WEED", "S3Server", "start"]
