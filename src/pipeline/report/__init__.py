"""`pipeline report`: one self-contained page about a build, from the build's files alone.

The page has no script and no external reference (a Content-Security-Policy meta forbids
both): the headline metrics, the confusion matrix and the cross-validation are HTML tables, and
each plot is an SVG embedded as a ``data:`` image inside ``<figure data-plot="NAME">`` with a
caption and alt text. The Markdown form is ``report.md`` beside one SVG per plot, for a pull
request comment in CI.

Nothing is re-fetched and no model is loaded: the plots come from the curves that ``train``
stored (``curves``), the learning curve from ``history.json``, the folds from what
``evaluate --folds`` stored. Only facts covered by the build id appear (plus those folds, which
the build and K determine), so the same build gives the same bytes wherever and whenever the
report is written. matplotlib is needed only to draw (``plots``), imported when drawing starts.

``facts`` holds the build as the report sees it, ``figures`` the plots, ``pages`` the HTML page
(and `pipeline diff --html`), ``markdown`` the Markdown form; this module checks the options,
loads the build and writes the files, and re-exports the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.report.facts import MAX_TABLE_CLASSES, Subject, flat_config, subject
from pipeline.report.figures import SPECS, Plot, draw, expected_plots, specs
from pipeline.report.markdown import markdown_report
from pipeline.report.pages import CSP, diff_html, html_report
from pipeline.store import Store

__all__ = [
    "CSP",
    "FORMATS",
    "MAX_TABLE_CLASSES",
    "SPECS",
    "Plot",
    "Subject",
    "check_format",
    "diff_html",
    "draw",
    "expected_plots",
    "flat_config",
    "html_report",
    "load",
    "markdown_report",
    "require_matplotlib",
    "specs",
    "subject",
    "write",
]


FORMATS = ("html", "markdown")


def check_format(fmt: str, output: Path | None = None, option: str = "-o") -> str:
    """``--format`` if the report can be written in it, else ConfigError (exit 3); also when
    an html report's ``output`` has a suffix that says another format (``-o report.pdf``)."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    if output is not None and (str(output) in ("", ".", "..") or output.name in ("", "..")):
        raise ConfigError(  # Path("") is ".": an html page cannot be written as a folder
            f"{option} '{output}' names no file: give the report's path, e.g. -o report.html"
        )
    if fmt == "html" and output is not None and output.is_dir():
        raise ConfigError(f"{option} {output} is a folder: give the report's file path in it")
    if fmt == "markdown" and output is not None and output.exists() and not output.is_dir():
        raise ConfigError(
            f"{option} {output}: a markdown report is a folder (report.md and one SVG per "
            "plot), and that is a file: name a folder, or pass --format html for one page"
        )
    if fmt == "markdown" and output is not None and _foreign(output):
        raise ConfigError(
            f"{option} {output} is a folder of other files (no report.md): a markdown report "
            "replaces its folder's report.md and plots, so name a new or empty folder, or "
            "that of an earlier report"
        )
    suffix = output.suffix.lower() if output is not None else ""
    if fmt == "markdown" and suffix in _FILE_SUFFIXES and not (output and output.is_dir()):
        raise ConfigError(  # `-o rep.html --format markdown` made a folder named rep.html
            f"{option} {output}: a markdown report is a folder (report.md and one SVG per "
            f"plot), and a {suffix} name says a file: name a folder (e.g. -o report), or pass "
            "--format html for one page"
        )
    if fmt == "html" and suffix not in ("", ".html", ".htm"):
        other = " (or pass --format markdown for a folder of Markdown and SVG files)"
        raise ConfigError(
            f"{option} {output}: the report is one HTML page, and a {suffix} name would hold HTML: "
            f"name it .html{other if option == '-o' else ''}"  # diff's --html has no markdown
        )
    return fmt


# Suffixes of files, not folders: a markdown report's -o named so is a mistake.
_FILE_SUFFIXES = (".html", ".htm", ".md", ".markdown", ".pdf", ".svg", ".txt", ".json")


def _foreign(folder: Path) -> bool:
    """Whether ``folder`` holds visible files and no report.md: not a report's folder."""
    try:
        names = {p.name for p in folder.iterdir() if not p.name.startswith(".")}
    except OSError:  # no folder yet (or unreadable: the write says so)
        return False
    return bool(names) and "report.md" not in names


def _plots_of(report: Path) -> set[str]:
    """The SVG files an earlier report.md shows (``![...](name.svg)``)."""
    import re

    try:
        text = report.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    return set(re.findall(r"\]\(([\w.-]+\.svg)\)", text))


def require_matplotlib() -> None:
    """ConfigError (exit 3) saying what to install when the report extra is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError(
            "pipeline report needs matplotlib, which is not installed: pip install "
            "'pipeline[report]' (`make install` installs it)"
        ) from None


def load(store: Store, ref: str | None, default_name: str) -> Subject:
    """The build named by ``ref`` (default: the latest): a build id or prefix, a release
    (``name@vN``, ``name@current``; ``vN``/``current`` of ``default_name``) or a package."""
    from pipeline import diff

    return subject(diff.resolve_one(store, ref or "latest", default_name), store)


def write(s: Subject, fmt: str, target: Any) -> tuple[list[str], int]:
    """Write ``s``'s report to ``target`` (a file for html, a folder for markdown), each file
    atomically; return the plot names and the bytes written."""
    from pathlib import Path

    from pipeline.store import atomic_write_bytes, store_error, write_output

    path = Path(target)
    advice = "choose another -o"
    if fmt == "html":
        data = html_report(s)
        write_output(path, data, advice)  # missing parent folders are made
        return expected_plots(s), len(data)
    files = markdown_report(s)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file on the way (checked before, but the folder may change)
        raise store_error(exc, path, advice) from exc
    stale = _plots_of(path / "report.md") - set(files)  # an earlier report's other plots
    for name, data in sorted(files.items(), key=lambda f: f[0] == "report.md"):
        atomic_write_bytes(path / name, data, advice)  # report.md last: it names the plots
    for name in sorted(stale):
        try:
            (path / name).unlink(missing_ok=True)
        except OSError as exc:
            raise store_error(exc, path / name, advice) from exc
    return expected_plots(s), sum(len(d) for d in files.values())
