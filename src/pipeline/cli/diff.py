"""`pipeline diff`: compare two builds, releases or packages."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from pipeline.cli._common import run, store_of

SIDE_HELP = (
    "A build (id, unique prefix, latest), a release (name@vN, name@current; vN or current use "
    "PIPELINE_MODEL__NAME) or a package (id, prefix, or .tar.gz path)."
)


class Format(StrEnum):
    """What `pipeline diff` prints."""

    table = "table"
    json = "json"
    markdown = "markdown"


def diff(
    a: str = typer.Argument(
        None,
        metavar="A",
        help=f"{SIDE_HELP} Default: the current release of PIPELINE_MODEL__NAME.",
        show_default=False,
    ),
    b: str = typer.Argument(
        None, metavar="B", help=f"{SIDE_HELP} Default: the latest build.", show_default=False
    ),
    fmt: Format = typer.Option(
        None,
        "--format",
        help="table, json (canonical, for tools) or markdown (GitHub tables, for a PR comment). "
        "Default: table on a terminal, else json.",
        show_default=False,
    ),
    show_all: bool = typer.Option(
        False, "--all", help="Also list what did not change (settings, metrics, matrix cells)."
    ),
    fail_on_regression: bool = typer.Option(
        False,
        "--fail-on-regression",
        help="Exit 6 (a failed quality gate) when B's primary test metric is worse than A's by "
        "more than --tolerance; the diff is printed first.",
    ),
    html: Path = typer.Option(
        None,
        "--html",
        help="Also write a self-contained HTML page: the diff's tables and both builds' plots "
        "overlaid (needs the `report` extra).",
        show_default=False,
    ),
    tolerance: float = typer.Option(
        None,
        "--tolerance",
        help="How much worse B may be, in the primary metric's units (default 0).",
        show_default=False,
    ),
) -> None:
    """Show what differs between build A and build B: identity, inputs (data, split, seed,
    code), settings, validation and test metrics with a better/worse verdict, the confusion
    matrix and epochs.

    The primary metric (the verdict and --fail-on-regression) is `pipeline tune`'s default: log
    loss for classification, RMSE (of the log target when both fit one) for regression. A
    difference smaller than a stored K-fold standard deviation (`pipeline evaluate --folds K`)
    reads "within CV noise". The document goes to stdout, the log events to stderr.
    """

    def body(loaded: Any, log: Any) -> None:
        from pipeline import diff as stage

        limit = stage.check_tolerance(tolerance, fail_on_regression)
        if html is not None:
            from pipeline import report

            report.check_format("html", html, "--html")
            report.require_matplotlib()
        store = store_of(loaded.settings, outputs={"--html": html})
        side_a, side_b = stage.resolve(store, a, b, loaded.settings.model.name)
        doc = stage.compare(store, side_a, side_b, all_=show_all)
        chosen = fmt or (Format.table if sys.stdout.isatty() else Format.json)
        typer.echo(stage.render(doc, chosen.value, all_=show_all), nl=False)
        if html is not None:
            from pipeline.store import write_output

            sides = [report.subject(side, store) for side in (side_a, side_b)]
            write_output(html, report.diff_html(doc, sides, show_all), "choose another --html")
        _log_summary(log, doc, side_a, side_b, html)
        if fail_on_regression:
            stage.check_regression(doc, limit)

    run("diff", body, log_to_stderr=True)


def _log_summary(
    log: Any, doc: dict[str, Any], side_a: dict[str, Any], side_b: dict[str, Any], html: Path | None
) -> None:
    """The ``diff.summary`` event: the verdict on the primary metric, and what changed."""
    primary = doc["primary"] or {}
    log.info(
        "diff.summary",
        a=side_a["build_id"],
        b=side_b["build_id"],
        identical=doc["identical"],
        metric=primary.get("metric"),
        a_value=primary.get("a"),
        b_value=primary.get("b"),
        delta=primary.get("delta"),
        verdict=doc["verdict"],
        inputs_changed=[r["key"] for r in doc["inputs"] if not r["same"]],
        settings_changed=[r["key"] for r in doc["settings"] if not r["same"]],
        release_settings_changed=[r["key"] for r in doc["release_settings"] if not r["same"]],
        html=None if html is None else str(html.resolve()),
    )
