"""The benchmarks in bench/ still run end to end (tiny sizes; no timing is asserted)."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import REPO, run_bench_quick

# Every figure the issue asks for, by benchmark (the summary table's first two columns).
# Benchmarks at tiny sizes: their own target (`make test-bench`, which CI runs), not `make test`.
pytestmark = pytest.mark.bench

EXPECTED = {
    "start-up": ["--help ÷ import torch", "--version ÷ import torch"],
    "training": ["train rows/s ÷ raw loop"],
    "ingestion": [
        "csv: read + preprocess ÷ pyarrow read",
        "parquet: read + preprocess ÷ pyarrow read",
    ],
    "prediction": [
        "predict rows/s ÷ pyarrow read+write",
        "forward rows/s ÷ raw torch",
        "cold start one row ÷ import torch",
    ],
    "memory": ["train peak RSS ÷ float32 data", "predict peak RSS 3 MB ÷ 1 MB file (chunk 1,000)"],
    "scaling": ["log-log slope of s/epoch vs rows"],
    "tune": [
        "Ray overhead: tune (1 at a time) ÷ plain loop",
        "throughput: 2 at a time ÷ 1 at a time",
    ],
    "predict_ray": [
        "predict: 2 Ray workers ÷ 1 Ray worker",
        "predict: 1 Ray worker ÷ in-process loop",
    ],
    "train_ray": [
        "train: 2 Ray workers ÷ 1 Ray worker",
        "train: 1 Ray worker ÷ in-process loop",
    ],
    "s3": [
        "package upload: s3 ÷ local",
        "release create: s3 ÷ local",
        "predict cold start one row: s3 ÷ local",
    ],
}

# bench/run.py's names (its --only choices and report names) and the table's names for them.
TABLE_NAME = {"startup": "start-up"}

# The smoke run in two parts, so that the two test workers can share it; each is one
# `bench/run.py --quick --only ...`. Prediction, memory and scaling stay together, as in the whole
# run: memory reuses prediction's house-prices package and scaling reuses memory's large
# training run (apart, each would make its own). Together the parts run every benchmark once.
# The search's, distributed predict's and distributed training's parts start Ray, so they run
# with the Ray tests (`make test-ray`); the object store's part starts SeaweedFS, so it runs
# with the S3 tests (`make test-s3`).
GROUPS = [
    ("startup", "training", "ingestion"),
    ("prediction", "memory", "scaling"),
    ("tune",),
    ("predict_ray",),
    ("train_ray",),
    ("s3",),
]
SUITE_MARKS = {
    "tune": pytest.mark.ray,
    "predict_ray": pytest.mark.ray,
    "train_ray": pytest.mark.ray,
    "s3": pytest.mark.s3,
}
PARAMS = [pytest.param(g, marks=[SUITE_MARKS[n] for n in g if n in SUITE_MARKS]) for g in GROUPS]
# Benchmarks that also write their raw samples as <name>-quick.json.
WITH_JSON = {"s3"}


def _run_py_benchmarks() -> list[str]:
    """The keys of bench/run.py's BENCHMARKS, read from its source (nothing imported)."""
    tree = ast.parse((REPO / "bench" / "run.py").read_text())
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "BENCHMARKS" for t in node.targets)
            and isinstance(node.value, ast.Dict)
        ):
            return [ast.literal_eval(key) for key in node.value.keys if key is not None]
    raise AssertionError("bench/run.py has no BENCHMARKS dict")


def test_the_groups_run_every_benchmark_once() -> None:
    """The groups below partition bench/run.py's benchmarks, whose figures EXPECTED lists."""
    names = _run_py_benchmarks()
    assert sorted(n for group in GROUPS for n in group) == sorted(names)
    assert [TABLE_NAME.get(n, n) for n in names] == list(EXPECTED)


@pytest.mark.parametrize("group", PARAMS, ids=["-".join(g) for g in GROUPS])
def test_every_benchmark_runs_at_tiny_sizes_and_reports_every_ratio(
    tmp_path: Path, group: tuple[str, ...]
) -> None:
    """`bench/run.py --quick` exits 0, reports each ratio as a positive number, cleans up."""
    work, out, _ = run_bench_quick(tmp_path, "run.py", "--only", ",".join(group))
    summary = (out / "summary-quick.md").read_text()
    rows = [line.split("|")[1:-1] for line in summary.splitlines() if line.startswith("| ")]
    found: dict[str, list[str]] = {}
    for cells in rows[1:]:  # rows[0] is the header
        benchmark, figure, ratio = cells[0].strip(), cells[1].strip(), float(cells[4])
        assert math.isfinite(ratio) and ratio > 0, cells
        found.setdefault(benchmark, []).append(figure)
    assert found == {TABLE_NAME.get(n, n): EXPECTED[TABLE_NAME.get(n, n)] for n in group}
    # One report per benchmark, and the temporary data (tables, CSVs, the store) is gone.
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{n}-quick.md" for n in group]
        + [f"{n}-quick.json" for n in group if n in WITH_JSON]
        + ["summary-quick.md"]
    )
    assert list(work.iterdir()) == []
    if "s3" in group:
        _check_s3_samples(json.loads((out / "s3-quick.json").read_text()))


def _check_s3_samples(result: dict[str, Any]) -> None:
    """bench/s3.py's JSON: every step timed on both stores, as often as it says, finite."""
    assert result["benchmark"] == "s3" and result["quick"] is True
    assert len(result["ratios"]) == len(EXPECTED["s3"])
    assert set(result["train_seconds"]) == {"local", "s3"}
    assert len(result["seconds"]) == 4  # package, release create, predict cold and warm
    for step, by_store in result["seconds"].items():
        assert set(by_store) == {"local", "s3"}, step
        for figures in by_store.values():
            assert len(figures["samples"]) == result["repeats"], step
            assert all(math.isfinite(x) and x > 0 for x in figures["samples"]), step
            assert min(figures["samples"]) <= figures["median"] <= figures["p90"], step


def test_the_quality_benchmark_runs_on_two_small_tables(tmp_path: Path) -> None:
    """`bench/quality.py --quick` on two small tables, one seed: every score a real number.

    The tool, HistGradientBoosting and the linear model each score both tables on the same test
    rows; the report has the summary (markdown) and the JSON has every run. No score is held to
    a target here (and no timing asserted): only the structure, and that scores are sensible.
    """
    work, out, stdout = run_bench_quick(
        tmp_path, "quality.py", "--tables", "penguins,hitters", "--seeds", "0"
    )
    assert sorted(p.name for p in out.iterdir()) == ["quality-quick.json", "quality-quick.md"]
    assert list(work.iterdir()) == []  # the CSVs and the store are gone
    assert "| table | task | rows | metric | tool | HGB | linear |" in stdout
    result = json.loads((out / "quality-quick.json").read_text())
    assert result["seeds"] == [0] and result["errors"] == {}
    assert set(result["provenance"]) == {"penguins", "hitters"}
    summaries = {s["table"]: s for s in result["tables"]}
    assert list(summaries) == ["penguins", "hitters"]
    assert (summaries["penguins"]["task"], summaries["penguins"]["metric"]) == (
        "multiclass",
        "accuracy",
    )
    # Hitters' salary is fitted on its log (the table's setting), so it is judged by rmse_log.
    assert (summaries["hitters"]["task"], summaries["hitters"]["metric"]) == (
        "regression",
        "rmse_log",
    )
    for name, summary in summaries.items():
        assert isinstance(summary["passed"], bool)
        assert summary["better_baseline"] in ("hgb", "linear")
        (only,) = result["runs"][name]
        assert only["seed"] == 0
        split = only["split"]
        assert split["train"] > 0 and split["val"] > 0 and split["test"] > 0
        assert split["train"] + split["val"] + split["test"] == only["rows"] == summary["rows"]
        for who in ("tool", "hgb", "linear"):
            scores = only[who]["metrics"]
            value = scores[summary["metric"]]
            assert isinstance(value, float) and math.isfinite(value), (name, who, scores)
            assert summary["mean"][who] == value  # one seed: the mean is that run's score
            if summary["metric"] == "accuracy":
                assert 0.0 <= value <= 1.0, (name, who, value)
                assert scores["n"] == split["test"]  # scored on the test rows, all of them
            else:
                assert 0.0 < value < 10.0, (name, who, value)  # an RMSE of log salaries
                assert scores["rmse"] > 0.0 and math.isfinite(scores["rmse"])
    verdict = result["verdict"]
    assert verdict["tables"] == 2 and 0 <= verdict["passed"] <= 2
    assert isinstance(verdict["better_than_both_on_average"], bool)


def test_serve_load_benchmark_runs_quick_and_loses_no_request(tmp_path: Path) -> None:
    """`serve_load.py --quick` exits 0: no errors under load (one-record and 100-record
    requests, beside the trivial app's ceiling), nothing lost across SIGTERM."""
    work, out, _ = run_bench_quick(tmp_path, "serve_load.py")
    report = (out / "serve_load-quick.md").read_text()
    rows = [[cell.strip() for cell in line.split("|")[1:-1]]
            for line in report.splitlines() if line.startswith("| ")]  # fmt: skip
    served = [r for r in rows if r[0] == "pipeline serve"]
    assert [(r[1], r[2]) for r in served] == [("2", "1"), ("8", "1"), ("2", "100")]
    for row in served:  # requests == ok, no error, req/s > 0, p99 >= p50 > 0
        assert int(row[4]) == int(row[5]) > 0 and row[6] == "0", row
        assert float(row[7]) > 0 and float(row[10]) >= float(row[9]) > 0, row
    assert sum(r[0] == "trivial ASGI app (ceiling)" for r in rows) == 2  # the ceiling beside it
    sigterm = rows[rows.index(next(r for r in rows if r[0].strip() == "clients")) + 1]
    answered, lost, unanswered, code = int(sigterm[4]), int(sigterm[6]), sigterm[7], sigterm[8]
    assert answered > 0 and lost == 0 and unanswered.strip() == "0" and code.strip() == "0"
    assert "Result: PASS" in report
    assert list(work.iterdir()) == []  # the temporary store and logs are gone
