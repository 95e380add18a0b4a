"""Prediction: `pipeline predict` CSV -> CSV, the forward pass, and the cold start of one row.

The model is the default house-prices network (trained for 5 epochs: speed, not accuracy), and
the input a CSV generated from Kaggle's test.csv rows (``predict_memory.generate_csv``).

1. Throughput: `pipeline predict` (a real CLI process) beside a child that streams the same file
   through pyarrow's CSV reader and writes one output row per input row, with no model. Rates
   are rows over each process's own timer around its read-predict-write loop (the
   ``predict.summary`` event; the reference times its loop the same way), so start-up and model
   loading, measured in 3, are left out; the wall time of each whole process is shown beside.
   Target >= 0.5x.
2. Forward pass: the network part of predict (``Predictor.network``, the embeddings folded into
   the first layer) beside a hand-written forward in raw torch (one ``F.embedding`` per column,
   ``F.linear`` layers) with the same weights on the same tensors; all outputs must agree.
   Target >= 0.9x its rate. The module's own forward (``fit.forward_all``, what training and
   evaluation use) is shown too.
3. Cold start: `pipeline predict` of a one-row CSV from a release (issue 14: "from a
   release"; the package above, released once in the bench's store), whole process, beside
   `python -c "import torch"`. Target <= 1.2x (issue 14; issue 5 asked 1.3x).
Runs alternate and repeat; the table gives medians.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _common import (
    Ratio,
    Report,
    checked,
    clean_env,
    events,
    measured,
    median,
    pipeline_cmd,
    rate,
    secs,
    table,
)
from predict_memory import FIXTURE, generate_csv, train_and_package


def reference_child(source: Path, output: Path) -> None:
    """pyarrow stream-read (every column text, as predict reads) and write; no model."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    t0 = time.perf_counter()
    header = source.open(encoding="utf-8").readline().rstrip("\n").split(",")
    reader = pacsv.open_csv(
        source,
        read_options=pacsv.ReadOptions(block_size=1 << 22),
        convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in header}),
    )
    schema = pa.schema([("Id", pa.string()), ("prediction", pa.float64())])
    rows = 0
    with pacsv.CSVWriter(output, schema) as writer:
        for batch in reader:
            zeros = pa.array([0.0] * batch.num_rows, pa.float64())
            writer.write_batch(pa.record_batch([batch.column(0), zeros], schema=schema))
            rows += batch.num_rows
    seconds = time.perf_counter() - t0
    print(json.dumps({"event": "reference.summary", "rows": rows, "seconds": seconds}))


def forward_child(package: Path, source: Path, rows: int, repeats: int) -> None:
    """Time predict's forward pass and a raw torch forward on the same tensors, alternating."""
    import pandas as pd
    import torch
    from torch.nn import functional as F

    from pipeline import fit, runtime
    from pipeline.linear import FLOOR
    from pipeline.model import MemberLinear
    from pipeline.predict import Predictor

    predictor = Predictor.from_package(package)
    frame = pd.read_csv(source, nrows=rows, keep_default_na=False, na_values=["NA", ""])
    frame.index = pd.RangeIndex(len(frame))
    numeric = frame[predictor.required].copy()
    for column in predictor.schema.columns:
        if column.kind == "numeric":
            numeric[column.name] = pd.to_numeric(numeric[column.name], errors="coerce")
    enc = predictor.pre.transform(numeric, str(source), with_target=False)
    x, c = torch.from_numpy(enc.numeric), torch.from_numpy(enc.categorical)
    model, cfg = predictor.model, predictor.model.cfg
    # The same weights as a hand-written ensemble would hold them: per member, one table per
    # column, in the order the first layer expects them (the model concatenates groups of equal
    # width), and plain linear layers; the output is the members' mean.
    k = cfg.members
    members: list[tuple[list[tuple[int, torch.Tensor]], list[tuple[torch.Tensor, ...]]]] = []
    linears = [m for m in model.modules() if isinstance(m, MemberLinear)]
    for m in range(k):
        tables: list[tuple[int, torch.Tensor]] = []
        for table_, cols, offsets in zip(model.groups, model._columns, model._offsets, strict=True):
            for col, start in zip(cols.tolist(), offsets[m, 0].tolist(), strict=True):
                rows = table_.weight[start : start + cfg.cardinalities[col]].detach()
                tables.append((col, rows))
        members.append(
            (tables, [(lin.weight[m].detach(), lin.bias[m].detach()) for lin in linears])
        )

    # The network's inputs clipped to its range (the model's ``input_low``/``input_high``),
    # inside the timed forward as the model does it; the ridge below sees them unclipped.
    inf = float("inf")
    low = torch.tensor([-inf if v is None else v for v in cfg.input_low or []] or [-inf])
    high = torch.tensor([inf if v is None else v for v in cfg.input_high or []] or [inf])
    low, high = low.to(x.dtype), high.to(x.dtype)

    @torch.inference_mode()
    def raw() -> torch.Tensor:
        seen = torch.minimum(torch.maximum(x, low), high)
        outs = []
        for tables, layers in members:
            h = torch.cat([seen] + [F.embedding(c[:, j], t) for j, t in tables], dim=1)
            for weight, bias in layers[:-1]:
                h = torch.relu(F.linear(h, weight, bias))
            outs.append(F.linear(h, *layers[-1]))
        out = torch.stack(outs).mean(dim=0)
        if cfg.blend < 1:  # the ridge beside a regression network (pipeline.linear)
            unclip, weight, table, bias = model.linear_weights()
            straight = x / torch.sqrt(torch.clamp(1 - (x * unclip) ** 2, min=FLOOR))
            ridge = F.linear(straight, weight.T, bias)
            for j, start in enumerate(model.linear_offsets[0].tolist()):
                ridge = ridge + F.embedding(c[:, j] + start, table)
            out = cfg.blend * out + (1 - cfg.blend) * ridge
        return out

    # predict's set-up (``runtime.for_inference``): one torch thread per kernel, one 64-row
    # block span per core at once; the raw forward and the module keep torch's default threads.
    default_threads = torch.get_num_threads()
    spans = runtime.for_inference()
    torch.set_num_threads(default_threads)

    def project() -> torch.Tensor:
        torch.set_num_threads(1)
        predictor.network.threads = spans
        try:
            return predictor.network(x, c)
        finally:
            torch.set_num_threads(default_threads)

    def module() -> torch.Tensor:
        return fit.forward_all(model, x, c)

    expected = raw()
    for fn in (project, module):
        if not torch.allclose(fn(), expected, rtol=1e-4, atol=1e-5):
            raise SystemExit(f"{fn.__name__} disagrees with the raw forward pass")
    for _ in range(repeats):
        for name, fn in (("project", project), ("module", module), ("raw", raw)):
            t0 = time.perf_counter()
            fn()
            seconds = time.perf_counter() - t0
            print(json.dumps({"event": "forward", "who": name, "rows": len(x), "seconds": seconds}))


def released(workdir: Path, package: Path, env: dict[str, str]) -> str:
    """The reference of a release of ``package`` in the bench's store (made on first use)."""
    ref = workdir / "release.ref"
    if not ref.exists():
        argv = [*pipeline_cmd(), "release", "create", str(package), "--id-file", str(ref)]
        checked(measured(argv, env), "release create")
    return ref.read_text(encoding="utf-8").strip()


def run(quick: bool, workdir: Path) -> Report:
    """The three measurements; the report and their ratios."""
    env = clean_env(workdir)
    repeats = 1 if quick else 3
    package = train_and_package(workdir, env, epochs=1 if quick else 5)
    source = workdir / "houses.csv"
    rows = generate_csv(source, 3_000_000 if quick else 100_000_000, seed=3)
    size_mb = source.stat().st_size / 1e6
    predict_env = {**env, "PIPELINE_RUN__ID_COLUMN": "Id"}
    out = workdir / "predictions.csv"

    # 1. Throughput.
    samples: dict[str, list[tuple[float, float]]] = {"predict": [], "reference": []}
    for _ in range(repeats):
        done = checked(
            measured(
                [
                    *pipeline_cmd(),
                    "predict",
                    str(source),
                    "--package",
                    str(package),
                    "-o",
                    str(out),
                ],
                predict_env,
            ),
            "pipeline predict",
        )
        summary = events(done.output, "predict.summary")[-1]
        assert summary["rows"] == rows, summary
        samples["predict"].append((rows / float(summary["seconds"]), rows / done.seconds))
        done = checked(
            measured([sys.executable, __file__, "--reference", str(source), str(out)], env),
            "reference",
        )
        summary = events(done.output, "reference.summary")[-1]
        samples["reference"].append((rows / float(summary["seconds"]), rows / done.seconds))
    out.unlink(missing_ok=True)
    p_run, p_wall = (median(s[k] for s in samples["predict"]) for k in (0, 1))
    r_run, r_wall = (median(s[k] for s in samples["reference"]) for k in (0, 1))

    # 2. Forward pass.
    fwd_rows = 1_000 if quick else 100_000
    done = checked(
        measured(
            [
                sys.executable,
                __file__,
                "--forward",
                str(package),
                str(source),
                str(fwd_rows),
                str(1 if quick else 7),
            ],
            env,
        ),
        "forward-pass child",
    )
    fwd: dict[str, list[float]] = {"project": [], "module": [], "raw": []}
    for event in events(done.output, "forward"):
        fwd[str(event["who"])].append(float(event["rows"]) / float(event["seconds"]))
    f_p, f_m, f_r = (median(fwd[k]) for k in ("project", "module", "raw"))
    source.unlink()

    # 3. Cold start: one row.
    one = workdir / "one.csv"
    one.write_text("\n".join(FIXTURE.read_text(encoding="utf-8").splitlines()[:2]) + "\n")
    release = released(workdir, package, predict_env)
    commands = {
        "predict": [*pipeline_cmd(), "predict", str(one), "--release", release, "-o", str(out)],
        "torch": [sys.executable, "-c", "import torch"],
    }
    for argv in [] if quick else commands.values():  # warm the page cache; not counted
        checked(measured(argv, predict_env), "warm-up")
    cold: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(1 if quick else 7):
        for name, argv in commands.items():
            cold[name].append(checked(measured(argv, predict_env), name).seconds)
    c_p, c_t = median(cold["predict"]), median(cold["torch"])

    body = (
        f"Input: {rows:,} rows ({size_mb:,.0f} MB) of house-prices test rows, 79 columns; "
        f"medians of {repeats} alternating runs; default chunk of 100,000 rows.\n\n"
        + table(
            ["run", "rows/s (own loop)", "rows/s (whole process)"],
            [
                ("`pipeline predict` CSV → CSV", rate(p_run), rate(p_wall)),
                ("pyarrow stream read + write, no model", rate(r_run), rate(r_wall)),
            ],
        )
        + f"\n\nForward pass on {fwd_rows:,} encoded rows:\n\n"
        + table(
            ["forward", "median rows/s", "runs"],
            [
                ("predict (`FoldedNetwork`)", rate(f_p), len(fwd["project"])),
                ("the module (`fit.forward_all`)", rate(f_m), len(fwd["module"])),
                ("raw torch, same weights", rate(f_r), len(fwd["raw"])),
            ],
        )
        + "\n\nCold start (whole process):\n\n"
        + table(
            ["command", "median", "min", "max"],
            [
                (
                    "`pipeline predict` one row",
                    secs(c_p),
                    secs(min(cold["predict"])),
                    secs(max(cold["predict"])),
                ),
                (
                    '`python -c "import torch"`',
                    secs(c_t),
                    secs(min(cold["torch"])),
                    secs(max(cold["torch"])),
                ),
            ],
        )
    )
    ratios = [
        Ratio(
            "prediction",
            "predict rows/s ÷ pyarrow read+write",
            rate(p_run),
            rate(r_run),
            p_run / r_run,
            ">=",
            0.5,
        ),
        Ratio(
            "prediction", "forward rows/s ÷ raw torch", rate(f_p), rate(f_r), f_p / f_r, ">=", 0.9
        ),
        Ratio(
            "prediction",
            "cold start one row ÷ import torch",
            secs(c_p),
            secs(c_t),
            c_p / c_t,
            "<=",
            1.2,
        ),
    ]
    return Report("prediction", body, ratios)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--reference", nargs=2, metavar=("IN", "OUT"))
    parser.add_argument("--forward", nargs=4, metavar=("PACKAGE", "CSV", "ROWS", "REPEATS"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    if args.reference:
        reference_child(Path(args.reference[0]), Path(args.reference[1]))
        sys.exit(0)
    if args.forward:
        p, s, n, k = args.forward
        forward_child(Path(p), Path(s), int(n), int(k))
        sys.exit(0)
    from _common import standalone

    sys.exit(standalone("prediction", run))
