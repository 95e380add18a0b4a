"""Training throughput: `pipeline train`'s epochs beside a hand-written raw torch loop.

A synthetic regression table (1M rows x 50 numeric + 5 categorical columns, Parquet) is used by:

- the project: one child process prepares the data exactly as `pipeline train` does (read,
  target, schema, split, fit and transform the features, the training tensors, the network
  config, ``runtime.configure``) and times ``fit.fit`` for one epoch at a time: the
  function and the loop the CLI runs (no validation pass here, as in the refit);
- the reference, in the same process and on the same rows: a raw loop with the same network
  shape (one network: the project runs with ``PIPELINE_MODEL__MEMBERS=1``, where the default
  ensemble trains 4; an embedding per categorical column, width by the same rule, hidden
  256-128, ReLU, dropout 0.1), batch size, AdamW settings (fused) and threads, on standardised
  tensors in memory, one ``randperm`` per epoch and index slices per batch.

The two alternate epoch by epoch, so the noise of a shared machine falls on both alike; the
ratio is of medians. Target: the pipeline reaches >= 0.9x the raw loop's rows/s. A real
`pipeline train` process is run too (one epoch; rows/s from its ``train.epoch`` event, which
includes its validation pass) as a cross-check of the in-process figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    synthetic,
    table,
)

if TYPE_CHECKING:
    import numpy as np

HIDDEN = (256, 128)
DROPOUT = 0.1


def train_env(root: Path, data: Path, batch_size: int, epochs: int, **extra: str) -> dict[str, str]:
    """Environment for `pipeline train` on the synthetic table: no refit, no early stop."""
    return clean_env(
        root,
        PIPELINE_DATA__SOURCE=str(data),
        PIPELINE_DATA__TARGET="y",
        PIPELINE_DATA__DROP="[]",
        PIPELINE_TRAIN__BATCH_SIZE=str(batch_size),
        PIPELINE_TRAIN__MAX_EPOCHS=str(epochs),
        PIPELINE_TRAIN__PATIENCE=str(epochs + 1),
        PIPELINE_TRAIN__REFIT="false",
        PIPELINE_MODEL__HIDDEN=json.dumps(list(HIDDEN)),
        PIPELINE_MODEL__DROPOUT=str(DROPOUT),
        # One network, as the raw loop trains: the default ensemble (issue 13) trains 4 members
        # on each batch, 4x the arithmetic, which is the recipe's cost, not the loop's.
        PIPELINE_MODEL__MEMBERS="1",
        **extra,
    )


def pipeline_epochs(
    root: Path, data: Path, batch_size: int, epochs: int
) -> tuple[list[float], int]:
    """Per-epoch rows/s of a `pipeline train` process, and its number of training rows."""
    child = checked(
        measured([*pipeline_cmd(), "train"], train_env(root, data, batch_size, epochs), cwd=root),
        "pipeline train",
    )
    n_train = int(events(child.output, "data.split")[0]["train"])
    seconds = [float(e["seconds"]) for e in events(child.output, "train.epoch")]
    return [n_train / s for s in seconds], n_train


def raw_setup(data: Path, rows: np.ndarray, batch_size: int) -> Any:
    """The reference: data as tensors and a hand-written network; returns ``epoch()``."""
    import numpy as np
    import pyarrow.parquet as pq
    import torch
    from torch import nn

    table_ = pq.read_table(data)
    numeric_names = [n for n in table_.column_names if n.startswith("x")]
    cat_names = [n for n in table_.column_names if n.startswith("c")]
    x = np.stack([table_[n].to_numpy() for n in numeric_names], axis=1)[rows]
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    codes, cards = [], []
    for name in cat_names:
        encoded = table_[name].dictionary_encode().combine_chunks()
        codes.append(encoded.indices.to_numpy().astype(np.int64)[rows] + 2)  # 0/1: unknown, NA
        cards.append(len(encoded.dictionary) + 2)
    y = table_["y"].to_numpy()[rows]
    y = (y - y.mean()) / y.std()
    n = len(rows)
    X = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    C = (
        torch.from_numpy(np.stack(codes, axis=1))
        if codes
        else torch.zeros((n, 0), dtype=torch.long)
    )
    Y = torch.from_numpy(y.astype(np.float32))
    dims = [max(1, min(16, round(1.6 * c**0.56))) for c in cards]

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.ModuleList(nn.Embedding(c, d) for c, d in zip(cards, dims, strict=True))
            layers: list[nn.Module] = []
            width = X.shape[1] + sum(dims)
            for h in HIDDEN:
                layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(DROPOUT)]
                width = h
            self.body = nn.Sequential(*layers, nn.Linear(width, 1))

        def forward(self, xb: torch.Tensor, cb: torch.Tensor) -> torch.Tensor:
            parts = [xb] + [e(cb[:, j]) for j, e in enumerate(self.emb)]
            return self.body(torch.cat(parts, dim=1)).squeeze(1)

    model = Net()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2, fused=True)

    def epoch() -> None:
        model.train()
        perm = torch.randperm(n)
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            loss = nn.functional.mse_loss(model(X[idx], C[idx]), Y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return epoch


def interleaved_child(data: Path, rounds: int) -> None:
    """Alternate one pipeline epoch and one raw epoch; one JSON line per epoch.

    The environment names the dataset and training settings, as for `pipeline train`.
    """
    import structlog

    from pipeline import features, fit, runtime
    from pipeline.prepare import prepare
    from pipeline.settings import load
    from pipeline.store import Store

    settings = load().settings
    # As `pipeline train` does: the same runtime, the same preparation, the same fitting loop.
    rt = runtime.configure_for(settings, settings.train.batch_size)
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())  # its events: silent
    store = Store.from_uri(settings.store, **settings.store_options())
    prepared = prepare(settings, store, structlog.get_logger())
    split, seeds, t, label = prepared.split, prepared.seeds, settings.train, prepared.label
    pre = features.fit(prepared.frame.iloc[split.train], prepared.schema, settings.features, label)
    enc = pre.transform(prepared.frame, label, with_target=True)
    del prepared
    rows = fit.Tensors.all(enc, rt["device"]).select(split.train)
    cfg = fit.network_config(pre, settings)
    raw_epoch = raw_setup(data, split.train, t.batch_size)

    def pipeline_epoch() -> None:
        fit.fit(cfg, rows, None, pre.target, t, seeds, rt["device"], epochs=1)

    n = len(split.train)
    print(json.dumps({"event": "setup", "train_rows": n, **rt}), flush=True)
    for _ in range(rounds):
        for who, epoch in (("pipeline", pipeline_epoch), ("raw", raw_epoch)):
            wall, cpu = time.perf_counter(), time.process_time()
            epoch()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            print(json.dumps({"event": "epoch", "who": who, "rows": n, "seconds": wall,
                              "cpu_seconds": cpu}), flush=True)  # fmt: skip


def run(quick: bool, workdir: Path) -> Report:
    """Pipeline vs raw loop at one size and the default batch size; the report and ratio."""
    rows, n_num, n_cat = (5_000, 50, 5) if quick else (1_000_000, 50, 5)
    batch_size, rounds = 64, (2 if quick else 3)
    data = workdir / "train.parquet"
    synthetic(data, rows, n_num, n_cat, seed=1)
    env = train_env(workdir, data, batch_size, 1)
    child = checked(
        measured([sys.executable, __file__, "--interleaved", str(data), str(rounds)], env),
        "interleaved training child",
    )
    setup = events(child.output, "setup")[0]
    samples: dict[str, list[tuple[float, float]]] = {"pipeline": [], "raw": []}
    for e in events(child.output, "epoch"):
        samples[e["who"]].append((e["rows"] / e["seconds"], e["rows"] / e["cpu_seconds"]))
    cli, n_train = pipeline_epochs(workdir, data, batch_size, 1)
    data.unlink()
    p, r = (median(v[0] for v in samples[k]) for k in ("pipeline", "raw"))
    p_cpu, r_cpu = (median(v[1] for v in samples[k]) for k in ("pipeline", "raw"))
    body = (
        f"{rows:,} rows x {n_num} numeric + {n_cat} categorical; {n_train:,} training rows; "
        f"batch size {batch_size}; hidden {'-'.join(map(str, HIDDEN))}; {setup['threads']} "
        f"threads, OMP_WAIT_POLICY={setup['omp_wait_policy']}; {rounds} alternating epochs each."
        "\n\n"
        + table(
            ["loop", "median rows/s", "epochs (rows/s)", "rows per CPU-second"],
            [
                ("`fit.fit` (the CLI's loop)", rate(p),
                 ", ".join(f"{v[0]:,.0f}" for v in samples["pipeline"]), f"{p_cpu:,.0f}"),
                ("raw torch loop", rate(r), ", ".join(f"{v[0]:,.0f}" for v in samples["raw"]),
                 f"{r_cpu:,.0f}"),
                ("`pipeline train` process (cross-check; epoch includes validation)",
                 rate(median(cli)), ", ".join(f"{v:,.0f}" for v in cli), ""),
            ],
            align="lrlr",
        )
    )  # fmt: skip
    ratio = Ratio("training", "train rows/s ÷ raw loop", rate(p), rate(r), p / r, ">=", 0.9)
    return Report("training", body, [ratio])


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--interleaved", nargs=2, metavar=("DATA", "ROUNDS"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    if args.interleaved:
        interleaved_child(Path(args.interleaved[0]), int(args.interleaved[1]))
        sys.exit(0)
    from _common import standalone

    sys.exit(standalone("training", run))
