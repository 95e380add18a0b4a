"""Run a command; write its exit code, peak RSS and wall seconds as JSON to a file.

    python -S bench/_rusage.py RESULT.json COMMAND [ARG...]

A child's ``ru_maxrss`` includes the memory of the process it was forked from, until it
execs: a benchmark parent holding a large table or torch (hundreds of MiB) would put that
floor under every measurement. This helper is a small process (about 10 MiB) between the two;
``-S`` keeps ``site`` out of it. Only the standard library, and nothing else runs here.
"""

import json
import os
import sys
import time

result, argv = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
pid = os.posix_spawnp(argv[0], argv, os.environ)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - t0
with open(result, "w") as fh:  # noqa: PTH123 (no pathlib import: keep this process small)
    json.dump(
        {
            "code": os.waitstatus_to_exitcode(status),
            "rss_kib": usage.ru_maxrss,  # KiB on Linux
            "seconds": seconds,
        },
        fh,
    )
