"""`pipeline report`: a self-contained HTML (or Markdown) report of a build or release."""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from pipeline.cli._common import run, store_of


class Format(StrEnum):
    """What `pipeline report` writes. A choice click checks, as diff's --format: another value
    is a usage error (exit 2); it was exit 3, as a setting's would be."""

    html = "html"
    markdown = "markdown"


def report(
    ref: str = typer.Argument(
        None,
        help="Build id or unique prefix, or a release (name@vN, name@current; vN or current "
        "with PIPELINE_MODEL__NAME). Default: the latest build.",
        show_default=False,
    ),
    output: Path = typer.Option(
        None,
        "--output",
        "-o",
        help="Where to write: a .html file, or a folder for markdown. Default: "
        "report-<build id prefix>.html (markdown: the folder report-<build id prefix>/).",
        show_default=False,
    ),
    fmt: Format = typer.Option(
        Format.html,
        "--format",
        help="html: one self-contained page (no script, no external reference). markdown: "
        "report.md and one SVG per plot, for a pull request comment.",
    ),
) -> None:
    """Write the report of a build: metrics, confusion matrix, learning curve, CV folds, and
    the task's plots (residuals; ROC, PR, calibration; per-class metrics), from its files only.

    The same build gives the same bytes on any machine. Needs the `report` extra (matplotlib).
    """

    def body(loaded: Any, log: Any) -> None:
        from pipeline import report as stage

        t0 = time.perf_counter()
        kind = fmt.value
        stage.check_format(kind, output)
        stage.require_matplotlib()
        store = store_of(loaded.settings, outputs={"--output": output})
        subject = stage.load(store, ref, loaded.settings.model.name)
        target = output
        if target is None:
            short = subject.build_id[:12]
            target = Path(f"report-{short}.html" if kind == "html" else f"report-{short}")
        plots, size = stage.write(subject, kind, target)
        log.info(
            "report.summary",
            path=str(target.resolve()),
            format=kind,
            build_id=subject.build_id,
            subject=subject.label,
            task=subject.task,
            plots=plots,
            bytes=size,
            seconds=round(time.perf_counter() - t0, 3),
        )

    run("report", body)
