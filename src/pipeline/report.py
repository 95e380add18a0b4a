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
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline import artifacts, curves
from pipeline.errors import ConfigError
from pipeline.store import Store

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
FORMATS = ("html", "markdown")
MAX_TABLE_CLASSES = 30  # a larger confusion matrix is left to metrics.json


@dataclass(frozen=True)
class Subject:
    """A build as the report sees it: its parsed JSON files and stored K-fold results."""

    label: str  # how the user named it: a build id, or a release reference
    build_id: str
    files: dict[str, Any]
    cv: dict[str, Any] | None

    @property
    def metrics(self) -> dict[str, Any]:
        return self.files["metrics.json"]

    @property
    def task(self) -> str:
        return str(self.metrics["task"])

    @property
    def curves(self) -> dict[str, Any]:
        return curves.from_files(self.files)

    @property
    def inputs(self) -> dict[str, Any]:
        return self.files["provenance.json"]["inputs"]


def subject(side: dict[str, Any], store: Store) -> Subject:
    """The report's view of a resolved build, release or package (``diff.resolve_one``)."""
    files = {n: json.loads(d) for n, d in side["files"].items() if n.endswith(".json")}
    label = side["release"] or (side["package_id"] and f"package {side['package_id']}")
    return Subject(label or side["build_id"], side["build_id"], files,
                   artifacts.stored_cv(store, side["build_id"]))  # fmt: skip


@dataclass(frozen=True)
class Plot:
    """One figure of the report: what it is called, says and shows."""

    name: str
    title: str
    caption: str
    alt: str
    svg: bytes


@dataclass(frozen=True)
class _Spec:
    name: str
    title: str
    draw: str  # the name of the ``plots.draw_*`` function
    data: Callable[[Subject], Any]  # the plot's data, or None when the build has none
    caption: Callable[[Subject], str]


def _confusion(s: Subject) -> Any:
    cm = s.metrics.get("test", {}).get("confusion_matrix")
    return cm if cm and len(cm["labels"]) <= 200 else None


def _learning(s: Subject) -> dict[str, Any]:
    return {**s.files["history.json"], "best_epoch": s.metrics.get("best_epoch")}


def _test_rows(s: Subject) -> str:
    split = s.inputs.get("split", {})
    return f"{split.get('test', '?')} test rows"


def _metric(s: Subject, part: str, name: str) -> str:
    return _fmt(s.metrics.get(part, {}).get(name))


def _learning_caption(s: Subject) -> str:
    history = s.files["history.json"]
    sel, refit = len(history.get("selection", [])), len(history.get("refit", []))
    text = f"Loss per epoch: {sel} epochs with early stopping chose epoch {s.metrics['best_epoch']}"
    if refit:
        text += f"; then {refit} epochs refitted on training and validation rows"
    return text + "."


def _cv_caption(s: Subject) -> str:
    assert s.cv is not None
    return (
        f"{s.cv['folds']}-fold cross-validation of this build's recipe on the rows outside the "
        "test split (pipeline evaluate --folds): each fold's score, the mean and one standard "
        "deviation."
    )


_CONFUSION = _Spec(
    "confusion_matrix",
    "Confusion matrix",
    "draw_confusion_matrix",
    _confusion,
    lambda s: (
        f"True against predicted class on {_test_rows(s)} (accuracy "
        f"{_metric(s, 'test', 'accuracy')})."
    ),
)
SPECS: dict[str, tuple[_Spec, ...]] = {
    "all": (
        _Spec(
            "learning_curve", "Learning curve", "draw_learning_curve", _learning, _learning_caption
        ),
        _Spec("cv_folds", "Cross-validation folds", "draw_cv_folds", lambda s: s.cv, _cv_caption),
    ),
    "regression": (
        _Spec(
            "predicted_vs_actual",
            "Predicted vs actual",
            "draw_predicted_vs_actual",
            lambda s: s.curves.get("predicted_actual"),
            lambda s: (
                f"Predictions on {_test_rows(s)} against the actual values (R² "
                f"{_metric(s, 'test', 'r2')}, RMSE {_metric(s, 'test', 'rmse')}); the dashed "
                "diagonal is a perfect model."
            ),
        ),
        _Spec(
            "residuals_vs_predicted",
            "Residuals vs predicted",
            "draw_residuals_vs_predicted",
            lambda s: s.curves.get("predicted_actual"),
            lambda s: (
                f"Residual (predicted - actual) of {_test_rows(s)} against the "
                "prediction; a trend or funnel shape is a bias the model did not learn."
            ),
        ),
        _Spec(
            "residual_histogram",
            "Residual histogram",
            "draw_residual_histogram",
            lambda s: s.curves.get("residual_histogram"),
            lambda s: (
                f"Distribution of the residuals of {_test_rows(s)} (MAE "
                f"{_metric(s, 'test', 'mae')})."
            ),
        ),
    ),
    "binary": (
        _CONFUSION,
        _Spec(
            "roc",
            "ROC curve",
            "draw_roc",
            lambda s: s.curves.get("roc"),
            lambda s: (
                f"True against false positive rate over every threshold (ROC AUC "
                f"{_metric(s, 'test', 'roc_auc')}); the diagonal is chance."
            ),
        ),
        _Spec(
            "pr",
            "Precision-recall curve",
            "draw_pr",
            lambda s: s.curves.get("pr"),
            lambda s: f"Precision against recall over every threshold, on {_test_rows(s)}.",
        ),
        _Spec(
            "calibration",
            "Calibration",
            "draw_calibration",
            lambda s: s.curves.get("calibration"),
            lambda s: (
                "Observed positive rate against the mean predicted probability in ten "
                "bins; on the diagonal, a probability means what it says."
            ),
        ),
        _Spec(
            "threshold_metrics",
            "Metrics vs threshold",
            "draw_threshold_metrics",
            lambda s: s.curves.get("threshold_sweep"),
            lambda s: (
                "Precision, recall, F1 and the share of rows predicted positive for "
                "each threshold on the positive class's probability "
                "(PIPELINE_RUN__THRESHOLD chooses it)."
            ),
        ),
    ),
    "multiclass": (
        _CONFUSION,
        _Spec(
            "per_class_metrics",
            "Per-class metrics",
            "draw_per_class_metrics",
            lambda s: s.curves.get("per_class"),
            lambda s: (
                f"Precision, recall and F1 of each class on {_test_rows(s)} (macro F1 "
                f"{_metric(s, 'test', 'f1_macro')})."
            ),
        ),
        _Spec(
            "roc_ovr",
            "One-vs-rest ROC",
            "draw_roc_ovr",
            lambda s: s.curves.get("roc_ovr"),
            lambda s: (
                f"ROC of each of the largest classes against the rest (macro ROC AUC "
                f"{_metric(s, 'test', 'roc_auc')})."
            ),
        ),
        _Spec(
            "confidence",
            "Accuracy vs confidence",
            "draw_confidence",
            lambda s: s.curves.get("confidence"),
            lambda s: (
                "Accuracy of the predictions kept, and the share kept, when only those "
                "whose top class probability reaches the threshold are kept."
            ),
        ),
    ),
}


def specs(task: str) -> tuple[_Spec, ...]:
    """The plots of a task's report, in order."""
    return SPECS["all"] + SPECS[task]


def expected_plots(s: Subject) -> list[str]:
    """The names of the plots ``s``'s report has (cv_folds only after evaluate --folds)."""
    return [spec.name for spec in specs(s.task) if spec.data(s) is not None]


def draw(subjects: list[Subject], labels: list[str] | None = None) -> list[Plot]:
    """Every plot the subjects' task has data for; two subjects are overlaid on one axes."""
    from pipeline import plots  # matplotlib: only now

    first = subjects[0]
    out = []
    for spec in specs(first.task):
        data = [spec.data(s) for s in subjects]
        if any(d is None for d in data):
            continue
        if spec.name == "confusion_matrix" and len(subjects) > 1:
            continue  # counts cannot be overlaid: `diff` lists the cells that changed
        series = list(zip(labels or [""] * len(subjects), data, strict=True))
        svg = plots.svg(getattr(plots, spec.draw), series, spec.title)
        caption = spec.caption(first) if len(subjects) == 1 else _overlay_caption(spec, labels)
        alt = f"{spec.title} of {first.task} build {first.build_id[:12]}. {caption}"
        out.append(Plot(spec.name, spec.title, caption, alt, svg))
    return out


def _overlay_caption(spec: _Spec, labels: list[str] | None) -> str:
    return f"{spec.title}: {' and '.join(labels or [])} on the same axes."


# --- formatting -------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    """A number as a person reads it, the same on every machine (no locale)."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:
            return "–"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.4g}"
    return str(value)


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _scalar_metrics(s: Subject) -> list[str]:
    names: list[str] = []
    for part in ("validation", "test"):
        for k, v in s.metrics.get(part, {}).items():
            if isinstance(v, int | float) and not isinstance(v, bool) and k not in names:
                names.append(k)
    return names


def _rows_html(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _identity_rows(s: Subject) -> list[tuple[str, str]]:
    inputs, schema = s.inputs, s.files.get("schema.json", {})
    dataset, split, code = inputs["dataset"], inputs["split"], inputs["code"]
    history = s.files["history.json"]
    rows = [
        ("build", s.build_id),
        ("task", f"{s.task}, target {schema.get('target', '?')}"),
        (
            "dataset",
            f"{dataset['uri']} ({_fmt(dataset['rows'])} rows, sha256 {dataset['sha256'][:16]})",
        ),
        (
            "split",
            f"train {_fmt(split['train'])}, validation {_fmt(split['val'])}, test "
            f"{_fmt(split['test'])} (digest {split['digest'][:16]})",
        ),
        ("seed", str(inputs["seed"])),
        ("code", f"pipeline {code['version']} (digest {code['digest'][:16]})"),
        (
            "epochs",
            f"best {s.metrics.get('best_epoch')} of {len(history.get('selection', []))}"
            f"{'; refitted on train + validation' if s.metrics.get('refit') else ''}",
        ),
    ]
    if s.label != s.build_id:
        rows.insert(0, ("release", s.label))
    return rows


def flat_config(config: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``config.json`` as dotted keys and values, sorted (``train.learning_rate``)."""
    out: list[tuple[str, Any]] = []
    for key in sorted(config):
        value = config[key]
        if isinstance(value, dict) and value:
            out += flat_config(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def _tables(s: Subject) -> str:
    parts = ["<h2>Build</h2>", _rows_html(_identity_rows(s), ("", ""))]
    names = _scalar_metrics(s)
    rows: list[tuple[Any, ...]] = [
        (n, _metric(s, "validation", n), _metric(s, "test", n)) for n in names
    ]
    parts += ["<h2>Metrics</h2>", _rows_html(rows, ("metric", "validation", "test"))]
    cm = s.metrics.get("test", {}).get("confusion_matrix")
    if cm and len(cm["labels"]) <= MAX_TABLE_CLASSES:
        labels = cm["labels"]
        header = ("true \\ predicted", *labels)
        rows = [(labels[i], *(_fmt(n) for n in row)) for i, row in enumerate(cm["matrix"])]
        parts += ["<h2>Confusion matrix (test)</h2>", _rows_html(rows, header)]
    if s.cv is not None:
        cv_names = [k[: -len("_mean")] for k in s.cv if k.endswith("_mean")]
        rows = [(n, _fmt(s.cv[f"{n}_mean"]), _fmt(s.cv.get(f"{n}_std"))) for n in cv_names]
        parts += [
            f"<h2>Cross-validation ({s.cv['folds']} folds)</h2>",
            _rows_html(rows, ("metric", "mean", "std")),
        ]
    deciles = s.curves.get("error_by_decile")
    if deciles:
        rows = [
            (
                d["decile"],
                _fmt(d["low"]),
                _fmt(d["high"]),
                d["count"],
                _fmt(d["mae"]),
                _fmt(d["bias"]),
            )
            for d in deciles
        ]
        parts += [
            "<h2>Error by decile of the actual value (test)</h2>",
            _rows_html(rows, ("decile", "from", "to", "rows", "MAE", "bias")),
        ]
    config = flat_config(s.files.get("config.json", {}))
    parts += [
        "<details><summary>Settings of this build (config.json)</summary>",
        _rows_html([(k, json.dumps(v, sort_keys=True)) for k, v in config], ("key", "value")),
        "</details>",
    ]
    return "\n".join(parts)


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;padding:24px;
max-width:1040px;color:#1d1d1f;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px}
.sub{color:#555;margin:0 0 16px;word-break:break-all}
table{border-collapse:collapse;margin:4px 0 8px;font-variant-numeric:tabular-nums}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f7}td{word-break:break-word}
.plots{display:flex;flex-wrap:wrap;gap:16px}
figure{margin:0;width:500px;border:1px solid #e5e5e5;border-radius:6px;padding:8px;
box-sizing:border-box}
figure img{display:block;width:100%;height:auto}
figcaption{font-size:12.5px;color:#333;margin-top:6px}
.note{color:#555}details{margin-top:24px}
"""


def _page(title: str, subtitle: str, body: str, figures: list[Plot]) -> bytes:
    figs = "\n".join(
        f'<figure data-plot="{_e(p.name)}"><img src="data:image/svg+xml;base64,'
        f'{base64.b64encode(p.svg).decode("ascii")}" alt="{_e(p.alt)}" width="460" '
        f'height="288"><figcaption><b>{_e(p.title)}.</b> {_e(p.caption)}</figcaption></figure>'
        for p in figures
    )
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{_e(title)}</h1>
<p class="sub">{_e(subtitle)}</p>
{body}
<h2>Plots</h2>
<div class="plots">
{figs}
</div>
</body>
</html>
"""
    return page.encode("utf-8")


def html_report(s: Subject) -> bytes:
    """The self-contained HTML report of one build."""
    body = _tables(s)
    missing = [
        spec.name for spec in specs(s.task) if spec.name != "cv_folds" and spec.data(s) is None
    ]
    if missing:
        body += (
            f'\n<p class="note">No plot data in this build for {", ".join(missing)}: it was '
            "made before builds stored their curves (curve_*.json). Train it again to see them."
            "</p>"
        )
    if s.cv is None:
        body += (
            '\n<p class="note">No cross-validation stored for this build: run '
            "<code>pipeline evaluate --folds 5</code> and write the report again to see the "
            "folds.</p>"
        )
    title = f"{s.task.capitalize()} model report"
    subtitle = f"{s.label} · build {s.build_id}" if s.label != s.build_id else f"build {s.build_id}"
    return _page(title, subtitle, body, draw([s]))


def markdown_report(s: Subject) -> dict[str, bytes]:
    """``report.md`` and one ``<plot>.svg`` per plot, as ``{file name: bytes}``."""
    figures = draw([s])
    lines = [f"# {s.task.capitalize()} model report", "", f"`{s.label}` · build `{s.build_id}`", ""]
    lines += ["| | |", "|---|---|"]
    lines += [f"| {k} | {_md(v)} |" for k, v in _identity_rows(s)]
    lines += ["", "## Metrics", "", "| metric | validation | test |", "|---|---:|---:|"]
    lines += [
        f"| {n} | {_metric(s, 'validation', n)} | {_metric(s, 'test', n)} |"
        for n in _scalar_metrics(s)
    ]
    cm = s.metrics.get("test", {}).get("confusion_matrix")
    if cm and len(cm["labels"]) <= MAX_TABLE_CLASSES:
        labels = cm["labels"]
        lines += ["", "## Confusion matrix (test)", ""]
        lines += ["| true \\ predicted | " + " | ".join(_md(x) for x in labels) + " |"]
        lines += ["|---|" + "---:|" * len(labels)]
        lines += [
            f"| {_md(labels[i])} | " + " | ".join(_fmt(n) for n in row) + " |"
            for i, row in enumerate(cm["matrix"])
        ]
    if s.cv is not None:
        lines += [
            "",
            f"## Cross-validation ({s.cv['folds']} folds)",
            "",
            "| metric | mean | std |",
            "|---|---:|---:|",
        ]
        lines += [
            f"| {k[:-5]} | {_fmt(s.cv[k])} | {_fmt(s.cv.get(k[:-5] + '_std'))} |"
            for k in s.cv
            if k.endswith("_mean")
        ]
    lines += ["", "## Plots", ""]
    for p in figures:
        lines += [f"### {p.title}", "", f"![{_md(p.alt)}]({p.name}.svg)", "", _md(p.caption), ""]
    files = {f"{p.name}.svg": p.svg for p in figures}
    files["report.md"] = ("\n".join(lines).rstrip() + "\n").encode("utf-8")
    return files


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def check_format(fmt: str) -> str:
    """``--format`` if the report can be written in it, else ConfigError (exit 3)."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    return fmt


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


def diff_html(doc: dict[str, Any], sides: list[Subject], all_: bool = False) -> bytes:
    """``pipeline diff --html``: the diff's tables, then both builds' plots overlaid (A, B)."""
    from pipeline import diff

    head, sections = diff.summary(doc, all_)
    parts = ["<ul>" + "".join(f"<li>{_e(h)}</li>" for h in head) + "</ul>"]
    for title, columns, rows in sections:
        parts += [f"<h2>{_e(title.capitalize())}</h2>", _rows_html(rows, columns)]
    a, b = sides
    if a.task == b.task:
        figures = draw(sides, ["A", "B"])
    else:
        figures = []
        parts.append('<p class="note">A and B solve different tasks: no plot overlays them.</p>')
    title = "pipeline diff"
    subtitle = f"A: {a.label} (build {a.build_id[:12]}) · B: {b.label} (build {b.build_id[:12]})"
    return _page(title, subtitle, "\n".join(parts), figures)


def write(s: Subject, fmt: str, target: Any) -> tuple[list[str], int]:
    """Write ``s``'s report to ``target`` (a file for html, a folder for markdown), each file
    atomically; return the plot names and the bytes written."""
    from pathlib import Path

    from pipeline.store import atomic_write_bytes

    path = Path(target)
    advice = "choose another -o"
    if fmt == "html":
        data = html_report(s)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data, advice)
        return expected_plots(s), len(data)
    files = markdown_report(s)
    path.mkdir(parents=True, exist_ok=True)
    for name, data in sorted(files.items()):
        atomic_write_bytes(path / name, data, advice)
    return expected_plots(s), sum(len(d) for d in files.values())
