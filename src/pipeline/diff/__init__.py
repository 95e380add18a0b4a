"""`pipeline diff`: what changed between two builds, and whether the model got better or worse.

Each side is a build (id, unique prefix, ``latest``), a release (``name@vN``, ``name@current``,
``vN``/``current`` for PIPELINE_MODEL__NAME) or a package (id, prefix, or a ``.tar.gz`` path):
all three come down to one build's verified files. The comparison is one JSON document
(``compare``) whose bytes depend only on the two builds, so CI can store it, diff it and gate on
it; the table and Markdown renderings are views of that document.

Nothing heavy is imported (no torch, pandas, numpy or matplotlib): the command only reads JSON
files, and a review tool that loads torch for that would take seconds to start. The resolvers of
releases and packages are imported where they are used; ``--html`` imports ``report``, which
draws.

``sides`` resolves the two sides, ``comparison`` computes the document and judges it (the
regression gate), ``rendering`` writes it as JSON, a table or Markdown; this module re-exports
them.
"""

from __future__ import annotations

from pipeline.diff.comparison import (
    BETTER,
    FORMAT,
    INCOMPARABLE,
    MISSING,
    NOISE,
    PROVENANCE,
    SAME,
    WORSE,
    check_regression,
    check_tolerance,
    compare,
    cross_validation,
    label,
    primary_metric,
)
from pipeline.diff.rendering import Section, render, summary
from pipeline.diff.sides import resolve, resolve_one

__all__ = [
    "BETTER",
    "FORMAT",
    "INCOMPARABLE",
    "MISSING",
    "NOISE",
    "PROVENANCE",
    "SAME",
    "WORSE",
    "Section",
    "check_regression",
    "check_tolerance",
    "compare",
    "cross_validation",
    "label",
    "primary_metric",
    "render",
    "resolve",
    "resolve_one",
    "summary",
]
