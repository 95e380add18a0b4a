"""Experiment, not a maintained benchmark: K-fold bagging in place of select-then-refit.

Runs ``bench/quality.py`` (same arguments) with ``pipeline.train.run`` replaced: EXP_K folds
(default 5) over the train + validation rows; each fold's network trains on the other folds and
early-stops on its own; the test prediction is the mean of the fold networks' raw outputs; for
regression the ridge's share is chosen on the out-of-fold predictions of every train +
validation row (the ridge's own out-of-fold predictions from per-fold refits at the
leave-one-out penalty), from EXP_WEIGHTS (default 1,0.75,0.5). EXP_FITALL=1 fits the
preprocessing statistics on train + validation rows (else on the training rows, as ``train``).
Members per fold come from PIPELINE_MODEL__MEMBERS. The figures in the README's "Why Carseats
and diabetes still miss" came from this script, for example:

    EXP_K=4 PIPELINE_MODEL__MEMBERS=1 .venv/bin/python bench/experiments/bagging.py \
        --tables diabetes,carseats,house-prices --seeds 0,1,2

Build ids are not computed (the result is scored, not written).
"""

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np

from pipeline import features, linear, train
from pipeline.prepare import prepare
from pipeline.split import Seeds
from pipeline.tensors import encode_all

K = int(os.environ.get("EXP_K", "5"))
WEIGHTS = tuple(float(v) for v in os.environ.get("EXP_WEIGHTS", "1,0.75,0.5").split(","))
FITALL = os.environ.get("EXP_FITALL") == "1"


def bag_run(settings, store, log, resume=False):
    import torch

    from pipeline import fit, outputs
    from pipeline.tensors import forward_all, score

    t0 = time.perf_counter()
    data = prepare(settings, store, log)
    split = data.split
    rows = np.sort(np.concatenate([split.train, split.val]))
    pre = features.fit(
        features.RowsOf(data.frame, rows if FITALL else split.train),
        data.schema,
        settings.features,
        data.label,
    )
    tensors = encode_all(data, pre, "cpu")
    cfg = fit.network_config(pre, settings)
    order = np.random.default_rng(data.seeds.split + 1).permutation(rows)
    parts = np.array_split(order, K)
    n = tensors.numeric.shape[0]
    oof = np.zeros((n, cfg.n_outputs), dtype=np.float64)
    test_out = np.zeros((len(split.test), cfg.n_outputs), dtype=np.float64)
    test_t = torch.from_numpy(split.test)
    epochs = []
    for k in range(K):
        held = np.sort(parts[k])
        rest = np.sort(np.concatenate([p for j, p in enumerate(parts) if j != k]))
        seeds = data.seeds if k == 0 else Seeds.from_seed(settings.seed * 1000 + k)
        fitted = fit.fit(
            cfg,
            tensors.select(rest),
            tensors.select(held),
            pre.target,
            settings.train,
            seeds,
            "cpu",
        )
        epochs.append(fitted.best_epoch)
        m = fitted.model
        oof[held] = forward_all(
            m, tensors.numeric, tensors.categorical, torch.from_numpy(held)
        ).numpy()
        test_out += forward_all(m, tensors.numeric, tensors.categorical, test_t).numpy() / K
    share = None
    if pre.target.task == "regression" and settings.model.linear_blend:
        radii = [s.smooth_clip for s in pre.numeric]
        radii += [0.0] * (pre.n_numeric_features - len(radii))
        inverse = np.array([1.0 / r if r > 0 else 0.0 for r in radii])
        cards = cfg.cardinalities

        def arrays(at):
            return (
                linear.unclip(tensors.numeric[at].numpy(), inverse),
                tensors.categorical[at].numpy(),
                tensors.target[at].numpy(),
            )

        x, c, y = arrays(rows)
        models, loo = linear.path(x, c, y, cards)
        at = int(np.argmin(loo))
        l2 = linear.L2_PATH[at]
        roof = np.zeros((n, cfg.n_outputs))
        for k in range(K):
            held = np.sort(parts[k])
            rest = np.sort(np.concatenate([p for j, p in enumerate(parts) if j != k]))
            rx, rc, ry = arrays(rest)
            lm = linear.fit(rx, rc, ry, cards, l2)
            hx, hc, _ = arrays(held)
            roof[held] = lm(hx, hc, cards)
        yr = tensors.target[rows].numpy().astype(np.float64)[:, None]
        best, best_loss = 1.0, float(np.mean((oof[rows] - yr) ** 2))
        for w in WEIGHTS[1:]:
            loss = float(np.mean((w * oof[rows] + (1 - w) * roof[rows] - yr) ** 2))
            if loss < best_loss:
                best, best_loss = w, loss
        share = 1 - best
        tx, tc, _ = arrays(split.test)
        test_out = best * test_out + (1 - best) * models[at](tx, tc, cards)
    values = outputs.to_values(test_out.astype(np.float32), pre.target)
    test = score(values, tensors.target[test_t].numpy(), pre.target)
    print("BAG", settings.seed, "epochs", epochs, "ridge share", share, file=sys.stderr)
    secs = time.perf_counter() - t0
    log.info("train.summary", train_seconds=secs)
    return train.TrainResult(
        "bag",
        {"test": test, "linear": None if share is None else {"ridge_share": share}},
        max(epochs),
        max(epochs),
    )


train.run = bag_run
import quality  # noqa: E402

sys.exit(quality.main(sys.argv[1:]))
