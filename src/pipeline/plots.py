"""The report's plots: matplotlib's Figure API (never pyplot), rendered to deterministic SVG.

Every plot is a function ``draw_<name>(ax, series)`` where ``series`` is a list of
``(label, data)``: one entry for a build's report, two for ``pipeline diff --html``, which
overlays a baseline and a candidate on the same axes. ``svg`` renders one figure.

Determinism (the same data gives the same bytes in any process):
- rendering runs inside ``style.context("default")``: matplotlib's own defaults, whatever
  ``matplotlibrc`` the working directory or the user holds;
- ``svg.hashsalt`` is fixed (SVG element ids are otherwise random) and the ``Date`` metadata is
  dropped; text is drawn as paths from the DejaVu Sans that matplotlib ships, so no system font
  or font cache changes the glyphs.

This module imports matplotlib at the top: only ``pipeline report`` and ``diff --html`` load it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from typing import Any

import matplotlib
import matplotlib.style
from matplotlib.axes import Axes
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure

Series = Sequence[tuple[str, Any]]

# Colour-blind-safe (Okabe-Ito): the first build, the second, then extra lines within a plot.
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
_STYLE = {
    "svg.hashsalt": "pipeline-report",
    "svg.fonttype": "path",
    "font.family": ["DejaVu Sans"],
    "font.size": 9.0,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "path.simplify": True,
}
MAX_SCATTER = 1000
WIDTH, HEIGHT = 6.4, 4.0  # inches; 460 x 288 CSS pixels at the SVG's 72 dpi


def svg(draw: Callable[..., None], series: Series, title: str) -> bytes:
    """One plot as SVG bytes: the same bytes for the same data, in any process.

    ``draw(ax, series)`` draws on one axes; a function marked ``whole_figure`` gets the figure
    instead and lays out its own panels.
    """
    with matplotlib.style.context("default"), matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(WIDTH, HEIGHT), layout="constrained")
        FigureCanvasSVG(fig)
        if getattr(draw, "whole_figure", False):
            draw(fig, series)
            fig.suptitle(title, x=0.02, ha="left", fontsize=10)
        else:
            ax = fig.add_subplot()
            draw(ax, series)
            ax.set_title(title, loc="left", fontsize=10)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(loc="best", fontsize=8)
        buf = io.BytesIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()


def _label(label: str, text: str) -> str:
    """A line's legend text: ``text`` alone for one build, prefixed by the build's label."""
    return f"{label}: {text}" if label else text


def _colour(i: int) -> str:
    return COLOURS[i % len(COLOURS)]


def _values(rows: list[dict[str, Any]], key: str) -> list[float]:
    return [math.nan if r.get(key) is None else float(r[key]) for r in rows]


# --- every task -------------------------------------------------------------------------------


def draw_learning_curve(ax: Axes, series: Series) -> None:
    """Training and validation loss per epoch, the chosen epoch, and the refit's training loss.

    One build: a colour per line. Two: a colour per build, a line style per kind of loss.
    """
    one = len(series) == 1
    for i, (label, history) in enumerate(series):
        selection, refit = history.get("selection", []), history.get("refit", [])
        epochs = [r["epoch"] for r in selection]
        ax.plot(
            epochs,
            _values(selection, "train_loss"),
            color=_colour(0 if one else i),
            lw=1.4,
            ls="-" if one else ":",
            label=_label(label, "train loss"),
        )
        ax.plot(
            epochs,
            _values(selection, "val_loss"),
            color=_colour(1 if one else i),
            lw=1.8,
            label=_label(label, "validation loss"),
        )
        if refit:
            ax.plot(
                [r["epoch"] for r in refit],
                _values(refit, "train_loss"),
                color=_colour(2 if one else i),
                lw=1.4,
                ls="--",
                label=_label(label, "refit on train + validation (train loss)"),
            )
        best = history.get("best_epoch")
        if best:
            ax.axvline(
                best,
                color="#555555" if one else _colour(i),
                ls=":",
                lw=1,
                label=_label(label, f"best epoch {best}"),
            )
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")


def draw_cv_folds(fig: Figure, series: Series) -> None:
    """One panel per metric (each in its own units): every fold's score, the mean and one
    standard deviation; two builds side by side within each panel."""
    names: list[str] = []
    for _, cv in series:
        for key in cv:
            if key.endswith("_mean") and key[: -len("_mean")] not in names:
                names.append(key[: -len("_mean")])
    axes = fig.subplots(1, max(1, len(names)), squeeze=False)[0]
    for ax, name in zip(axes, names, strict=False):
        for i, (_, cv) in enumerate(series):
            x = float(i)
            ys = [float(f[name]) for f in cv.get("per_fold", []) if f.get(name) is not None]
            ax.scatter([x] * len(ys), ys, color=_colour(i), s=14, alpha=0.7, zorder=3)
            mean, std = cv.get(f"{name}_mean"), cv.get(f"{name}_std")
            if mean is not None:
                ax.errorbar(
                    [x],
                    [mean],
                    yerr=[std or 0.0],
                    color=_colour(i),
                    fmt="_",
                    ms=16,
                    capsize=4,
                    zorder=4,
                )
        ax.set_xlim(-0.8, len(series) - 0.2)
        ax.set_xticks(range(len(series)), [lbl or f"{cv.get('folds')} folds" for lbl, cv in series])
        ax.set_title(name, fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
        ax.yaxis.get_major_formatter().set_useOffset(False)


draw_cv_folds.whole_figure = True  # type: ignore[attr-defined]


# --- regression -------------------------------------------------------------------------------


def _points(ax: Axes, x: list[float], y: list[float], i: int, label: str) -> None:
    """A scatter of at most ``MAX_SCATTER`` points, an even spread of the rows given: each is
    ~140 bytes of SVG, and a page of several such plots must stay well under 1 MB."""
    n = len(x)
    if n > MAX_SCATTER:
        keep = [k * n // MAX_SCATTER for k in range(MAX_SCATTER)]
        x, y = [x[k] for k in keep], [y[k] for k in keep]
        label = f"{label} ({MAX_SCATTER:,} shown)"
    ax.plot(x, y, ls="none", marker="o", ms=2.6, mew=0, alpha=0.55, color=_colour(i), label=label)


def draw_predicted_vs_actual(ax: Axes, series: Series) -> None:
    """Each test row's prediction against its actual value; the diagonal is a perfect model."""
    low, high = math.inf, -math.inf
    for i, (label, pairs) in enumerate(series):
        x, y = _values(pairs, "actual"), _values(pairs, "predicted")
        _points(ax, x, y, i, _label(label, f"{len(pairs)} test rows"))
        finite = [v for v in x + y if math.isfinite(v)]
        if finite:
            low, high = min(low, *finite), max(high, *finite)
    if math.isfinite(low):
        ax.plot([low, high], [low, high], color="#555555", lw=1, ls="--", label="_perfect")
    ax.set_xlabel("actual")
    ax.set_ylabel("predicted")


def draw_residuals_vs_predicted(ax: Axes, series: Series) -> None:
    """Residual (predicted - actual) against the prediction: structure here is bias."""
    for i, (label, pairs) in enumerate(series):
        x, y = _values(pairs, "predicted"), _values(pairs, "residual")
        _points(ax, x, y, i, _label(label, f"{len(pairs)} test rows"))
    ax.axhline(0.0, color="#555555", lw=1, ls="--")
    ax.set_xlabel("predicted")
    ax.set_ylabel("residual (predicted - actual)")


def draw_residual_histogram(ax: Axes, series: Series) -> None:
    """How many test rows fall in each residual bin."""
    for i, (label, bins) in enumerate(series):
        lows, highs = _values(bins, "low"), _values(bins, "high")
        counts = [int(b["count"]) for b in bins]
        ax.stairs(
            counts,
            [*lows, highs[-1]] if bins else [0.0],
            fill=len(series) == 1,
            alpha=0.6 if len(series) == 1 else 1.0,
            color=_colour(i),
            label=_label(label, "test rows"),
        )
    ax.axvline(0.0, color="#555555", lw=1, ls="--")
    ax.set_xlabel("residual (predicted - actual)")
    ax.set_ylabel("rows")


# --- classification ---------------------------------------------------------------------------


def draw_confusion_matrix(ax: Axes, series: Series) -> None:
    """Counts of true (rows) against predicted (columns) classes, darker for more."""
    _, cm = series[0]
    labels, matrix = cm["labels"], cm["matrix"]
    k = len(labels)
    image = ax.imshow(matrix, cmap="Blues", aspect="auto")
    ax.figure.colorbar(image, ax=ax, shrink=0.8)
    if k <= 20:
        peak = max((max(row) for row in matrix), default=0)
        for r, row in enumerate(matrix):
            for c, n in enumerate(row):
                ax.text(
                    c,
                    r,
                    str(n),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if n > peak / 2 else "black",
                )
    ticks = range(k) if k <= 30 else range(0, k, max(1, k // 30))
    ax.set_xticks(list(ticks), [labels[t] for t in ticks], rotation=45 if k > 6 else 0)
    ax.set_yticks(list(ticks), [labels[t] for t in ticks])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.grid(False)


def draw_roc(ax: Axes, series: Series) -> None:
    """True against false positive rate over every threshold; the diagonal is chance."""
    for i, (label, points) in enumerate(series):
        ax.plot(
            _values(points, "fpr"),
            _values(points, "tpr"),
            color=_colour(i),
            lw=1.8,
            label=_label(label, "ROC"),
        )
    ax.plot([0, 1], [0, 1], color="#555555", lw=1, ls="--", label="_chance")
    _unit(ax, "false positive rate", "true positive rate")


def draw_pr(ax: Axes, series: Series) -> None:
    """Precision against recall over every threshold."""
    for i, (label, points) in enumerate(series):
        ax.plot(
            _values(points, "recall"),
            _values(points, "precision"),
            color=_colour(i),
            lw=1.8,
            label=_label(label, "precision-recall"),
        )
    _unit(ax, "recall", "precision")


def draw_calibration(ax: Axes, series: Series) -> None:
    """Observed positive rate against the mean predicted probability per bin (reliability)."""
    for i, (label, bins) in enumerate(series):
        ax.plot(
            _values(bins, "mean_predicted"),
            _values(bins, "fraction_positive"),
            marker="o",
            ms=4,
            color=_colour(i),
            lw=1.5,
            label=_label(label, "test rows"),
        )
    ax.plot([0, 1], [0, 1], color="#555555", lw=1, ls="--", label="_perfect")
    _unit(ax, "mean predicted probability", "observed positive rate")


def draw_threshold_metrics(ax: Axes, series: Series) -> None:
    """Precision, recall, F1 and the positive rate for each decision threshold."""
    styles = (("precision", "-"), ("recall", "--"), ("f1", "-."), ("positive_rate", ":"))
    for i, (label, sweep) in enumerate(series):
        for j, (key, ls) in enumerate(styles):
            ax.plot(
                _values(sweep, "threshold"),
                _values(sweep, key),
                ls=ls,
                lw=1.5,
                color=_colour(i if len(series) > 1 else j),
                label=_label(label, key),
            )
    _unit(ax, "threshold on the positive class's probability", "value")


def draw_per_class_metrics(ax: Axes, series: Series) -> None:
    """Precision, recall and F1 of each class (the 30 with the most test rows at most)."""
    keys = ("precision", "recall", "f1")
    groups = len(series) * len(keys)
    width = 0.8 / groups
    for i, (label, rows) in enumerate(series):
        shown = sorted(rows, key=lambda r: -int(r["support"]))[:30]
        shown = sorted(shown, key=lambda r: rows.index(r))
        for j, key in enumerate(keys):
            g = i * len(keys) + j
            xs = [n + (g - (groups - 1) / 2) * width for n in range(len(shown))]
            ax.bar(
                xs,
                [0.0 if r[key] is None else r[key] for r in shown],
                width,
                color=_colour(g if len(series) > 1 else j),
                alpha=1.0 - 0.25 * i,
                label=_label(label, key),
            )
        ax.set_xticks(
            range(len(shown)),
            [str(r["class"]) for r in shown],
            rotation=45 if len(shown) > 6 else 0,
        )
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score")


def draw_roc_ovr(ax: Axes, series: Series) -> None:
    """One-vs-rest ROC of the classes with the most test rows."""
    for i, (label, rows) in enumerate(series):
        classes = list(dict.fromkeys(r["class"] for r in rows))
        for j, cls in enumerate(classes):
            points = [r for r in rows if r["class"] == cls]
            ax.plot(
                _values(points, "fpr"),
                _values(points, "tpr"),
                lw=1.5,
                ls="-" if i == 0 else "--",
                color=_colour(j),
                label=_label(label, f"class {cls}"),
            )
    ax.plot([0, 1], [0, 1], color="#555555", lw=1, ls=":", label="_chance")
    _unit(ax, "false positive rate", "true positive rate")


def draw_confidence(ax: Axes, series: Series) -> None:
    """Accuracy and coverage when only predictions at least this confident are kept."""
    for i, (label, rows) in enumerate(series):
        x = _values(rows, "threshold")
        ax.plot(
            x,
            _values(rows, "accuracy"),
            color=_colour(i),
            lw=1.8,
            label=_label(label, "accuracy of kept rows"),
        )
        ax.plot(
            x,
            _values(rows, "coverage"),
            color=_colour(i),
            lw=1.5,
            ls="--",
            label=_label(label, "coverage (rows kept)"),
        )
    _unit(ax, "minimum confidence (top class probability)", "fraction")


def _unit(ax: Axes, xlabel: str, ylabel: str) -> None:
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
