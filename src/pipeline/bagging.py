"""K-fold bagging: on small tables, K networks in place of select-then-refit (step 3 of the
README's "What training does", bagged).

The training and validation rows are cut into K folds (stratified by class, as the
cross-validation folds of `evaluate` and `tune` are); network ``i`` trains on every fold but
``i`` and early-stops on fold ``i``, from seeds of its own drawn from the one seed. The model is
the K networks side by side as one ensemble (``merge``: each fold's members, K times as many),
so the package, `predict` and `serve` are unchanged. Every training row then has an
out-of-fold prediction, from the network that never saw it: the ridge's share of the output is
chosen on those (``blend``), four or five times as many rows as the validation split that
chooses it without bagging, so it may take any share, the whole output included.

Why: a validation split of a small table is a few dozen rows. It chose the epoch count and the
ridge's share from noise (diabetes: 66 rows), and the refit then trained on rows nothing had
checked. AutoGluon bags for the same reason. Measured with `make bench-quality` (seeds 0, 1, 2):
diabetes 56.83 -> 54.95 (the linear model 54.97), Carseats 1.140 -> 1.095, cps1985 0.4195 ->
0.4088, Hitters 0.4383 -> 0.4550 (the one that lost); larger tables (house prices, Titanic)
keep select-then-refit: bagged, house prices lost seeds 7 and 42, Titanic seed 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline import split as split_

if TYPE_CHECKING:
    from collections.abc import Callable

    from pipeline.features import Preprocessor, TargetState
    from pipeline.linear import Blend
    from pipeline.model import ModelConfig, TabularMLP
    from pipeline.prepare import Prepared
    from pipeline.settings import Settings
    from pipeline.tensors import Tensors

# train.bag_folds=auto: this many folds below AUTO_ROWS training + validation rows, else none.
AUTO_FOLDS = 5
AUTO_ROWS = 1000
# The ridge's share is chosen from these network shares on the out-of-fold predictions.
WEIGHTS = (1.0, 0.75, 0.5, 0.25, 0.0)


def folds_for(settings: Settings, rows: int) -> int:
    """K for a run on ``rows`` training + validation rows; 0: no bagging. Each fold holds at
    least one row out: auto takes at most ``rows`` folds, and more asked for is a ConfigError
    (a table of 4 such rows had empty folds, a ZeroDivisionError)."""
    from pipeline.errors import ConfigError

    asked = settings.train.bag_folds
    if asked == "auto":
        small = 2 <= rows < AUTO_ROWS and settings.train.workers is None
        return min(AUTO_FOLDS, rows) if small else 0
    if int(asked) > rows:
        raise ConfigError(
            f"PIPELINE_TRAIN__BAG_FOLDS={asked}, but the table has {rows} training + validation "
            f"rows: each fold holds at least one out; set it to {rows} or fewer, or to auto"
        )
    return int(asked)


def say_unbagged(settings: Settings, rows: int, log: Any) -> None:
    """A warning when ``rows`` training + validation rows are a table that `train` in one
    process bags (auto) and Ray's workers train it without: a 30-row table gave a validation
    R² of -0.15 against 0.81, and only `bag_folds: null` in the summary said why."""
    if settings.train.bag_folds == "auto" and 2 <= rows < AUTO_ROWS:
        log.warning(
            "train.warning", bag_folds=None,
            message=f"{rows} training + validation rows: in one process `train` bags them "
            f"({AUTO_FOLDS} folds, PIPELINE_TRAIN__BAG_FOLDS=auto), but not on Ray's workers: "
            "this build is one network early-stopped on the validation rows; train without "
            "--workers for the bagged model, which a table this small needs",
        )  # fmt: skip


def members_per_fold(settings: Settings, k: int) -> int:
    """Each fold's share of ``model.members`` (rounded up): the ensemble keeps about its size,
    so a bagged model predicts at about the speed of an unbagged one."""
    return max(1, math.ceil(settings.model.members / k))


def parts(rows: np.ndarray, k: int, seed: int, labels: np.ndarray | None) -> list[tuple[Any, Any]]:
    """(training rows, held-out rows) of each fold of ``rows``, sorted; stratified by
    ``labels`` (``rows``' classes) for classification."""
    cut = split_.folds(rows, k, 0.0, seed, labels)
    return [(np.sort(np.concatenate([fit, val])), held) for fit, val, held in cut]


def fold_seeds(seed: int, fold: int) -> split_.Seeds:
    """Fold ``fold``'s seeds: a stream of the one seed of its own."""
    child = np.random.SeedSequence([seed, 0xBA9, fold]).generate_state(1, dtype=np.uint64)[0]
    return split_.Seeds.from_seed(int(child >> 1))


def merge(models: list[TabularMLP]) -> TabularMLP:
    """The fold networks as one ensemble: their members side by side, in fold order. The mean
    of its members' outputs is the mean of the folds' (each has as many members)."""
    import torch

    from pipeline.model import TabularMLP

    first = models[0].cfg
    merged = TabularMLP(replace(first, members=first.members * len(models)))
    states = [m.state_dict() for m in models]
    # Every parameter (member layers, embedding tables) is laid out member-major on dim 0.
    merged.load_state_dict({name: torch.cat([s[name] for s in states]) for name in states[0]})
    return merged


@dataclass
class OutOfFold:
    """Each training row's output from the fold network that never saw it."""

    rows: np.ndarray  # sorted training + validation rows
    network: np.ndarray  # [n, outputs] float64, in ``rows`` order


def out_of_fold(
    models: list[TabularMLP], folds: list[tuple[Any, Any]], part: Callable[[Any], Tensors]
) -> OutOfFold:
    """The out-of-fold outputs of ``models`` (one per fold) on their held-out rows."""
    from pipeline.tensors import forward_all

    rows = np.sort(np.concatenate([held for _, held in folds]))
    out = np.zeros((len(rows), models[0].cfg.n_outputs), dtype=np.float64)
    for model, (_, held) in zip(models, folds, strict=True):
        at = part(held)
        values = forward_all(model, at.numeric, at.categorical, at.rows).cpu().numpy()
        out[np.searchsorted(rows, held)] = values
    return OutOfFold(rows, out)


def blend(
    model: TabularMLP,
    oof: OutOfFold,
    folds: list[tuple[Any, Any]],
    part: Callable[[Any], Tensors],
    pre: Preprocessor,
) -> Blend | None:
    """The ridge beside the bagged network: its penalty by leave-one-out error on every
    training row, its share from ``WEIGHTS`` by the out-of-fold loss of the blend (the ridge's
    own out-of-fold outputs from a fit per fold at that penalty), then fitted on every row and
    attached to ``model``. None where ``tensors.blends`` says no ridge is fitted."""
    from pipeline import linear
    from pipeline.tensors import blends, ridge_arrays, unclip_radii

    if not blends(pre, len(oof.rows)):
        return None
    inverse = unclip_radii(pre)
    cards = model.cfg.cardinalities

    def arrays(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return ridge_arrays(part(rows), inverse)

    x, c, y = arrays(oof.rows)
    models, loo = linear.path(x, c, y, cards)
    at = int(np.argmin(loo))
    ridge = np.zeros_like(oof.network)
    for fit_rows, held in folds:
        one = linear.fit(*arrays(fit_rows), cards, linear.L2_PATH[at])
        hx, hc, _ = arrays(held)
        ridge[np.searchsorted(oof.rows, held)] = one(hx, hc, cards)
    alone = linear.loss(oof.network, y)
    best = linear.Blend(linear.L2_PATH[at], 1.0, alone, alone)
    for weight in WEIGHTS[1:]:
        mixed = weight * oof.network + (1.0 - weight) * ridge
        value = linear.loss(mixed, y)
        if value < best.loss and _clear(oof.network, mixed, y):
            best = linear.Blend(linear.L2_PATH[at], weight, value, alone)
    if best.weight < 1.0:
        chosen = models[at]
        model.attach_linear(best.weight, inverse, chosen.numeric, chosen.categorical, chosen.bias)
        oof.network = best.weight * oof.network + (1.0 - best.weight) * ridge
    return best


def _clear(network: np.ndarray, blended: np.ndarray, y: np.ndarray) -> bool:
    """Whether the blend's gain over the network alone, row by row, exceeds its standard error:
    a share the out-of-fold rows cannot tell from noise is not taken (Hitters: a quarter of
    the output to a ridge 0.04% better out of fold cost 0.004 of test RMSE)."""
    gain = (network[:, 0] - y) ** 2 - (blended[:, 0] - y) ** 2
    return bool(gain.mean() > gain.std(ddof=1) / np.sqrt(len(gain)))


def fold_config(cfg: ModelConfig, settings: Settings, k: int) -> ModelConfig:
    """The network of one fold: ``members_per_fold`` members."""
    return replace(cfg, members=members_per_fold(settings, k))


@dataclass
class Bagged:
    """The fold networks and their learning curves, in fold order."""

    models: list[TabularMLP]
    histories: list[list[dict[str, Any]]]
    best_epochs: list[int]
    stopped_early: list[bool]

    def to_json(self, k: int) -> dict[str, Any]:
        """What ``metrics.json`` records (``bagging``)."""
        members = self.models[0].cfg.members
        return {"folds": k, "members_per_fold": members, "best_epochs": self.best_epochs}


def train_folds(
    cfg: ModelConfig,
    settings: Settings,
    folds: list[tuple[Any, Any]],
    part: Callable[[Any], Tensors],
    pre: Preprocessor,
    device: str,
    hooks: dict[str, Any],
    ck: dict[str, Any] | None,
) -> Bagged:
    """Train each fold's network (``fit.fit``, early-stopped on its held-out fold).

    ``hooks``: ``epoch(fold, row)`` for each epoch's row, ``save(phase, state, selection)`` a
    checkpoint, ``stopped(stop, phase, selection)`` the exception a stop signal raises. A
    checkpoint's phase is ``fold<i>``; its selection holds the folds done before (weights,
    curves), so a resumed run trains only the rest and ends with the same weights."""
    from pipeline import fit
    from pipeline.model import TabularMLP

    k, seed = len(folds), settings.seed
    done: list[dict[str, Any]] = [] if ck is None else list(ck["selection"]["folds"])
    for i in range(len(done), k):
        fit_rows, held = folds[i]
        phase = f"fold{i}"
        resume = ck["loop"] if ck is not None and ck["phase"] == phase else None

        def on_epoch(row: dict[str, Any], fold: int = i) -> None:
            hooks["epoch"](fold, row)

        def on_checkpoint(state: fit.FitState, at: str = phase) -> None:
            hooks["save"](at, state, {"folds": list(done)})

        try:
            fitted = fit.fit(
                cfg, part(fit_rows), part(held), pre.target, settings.train,
                fold_seeds(seed, i), device, on_epoch=on_epoch, resume=resume,
                on_checkpoint=on_checkpoint,
            )  # fmt: skip
        except fit.Stopped as stopped:
            raise hooks["stopped"](stopped, phase, {"folds": list(done)}) from None
        done.append(fitted.selection())
    models = []
    for each in done:
        model = TabularMLP(cfg).to(device)
        model.load_state_dict(each["model"])
        models.append(model)
    return Bagged(
        models,
        [each["history"] for each in done],
        [int(each["best_epoch"]) for each in done],
        [bool(each["stopped_early"]) for each in done],
    )


@dataclass
class Run:
    """A bagged training run: the merged network, the folds and their out-of-fold outputs."""

    model: TabularMLP
    bagged: Bagged
    folds: list[tuple[Any, Any]]
    oof: OutOfFold

    def rows_seen(self) -> int:
        """Training rows passed over, every fold's epochs counted."""
        return sum(
            len(f) * len(h) for (f, _), h in zip(self.folds, self.bagged.histories, strict=True)
        )

    def blended(self, part: Callable[[Any], Tensors], pre: Preprocessor) -> Blend | None:
        """``blend`` for this run's network."""
        return blend(self.model, self.oof, self.folds, part, pre)

    def validation(self, part: Callable[[Any], Tensors], target: TargetState) -> dict[str, Any]:
        """The metrics of the out-of-fold outputs (blended, once ``blended``): each training
        row scored by the network that never saw it."""
        from pipeline import outputs
        from pipeline.tensors import score

        values = outputs.to_values(self.oof.network.astype(np.float32), target)
        return score(values, part(self.oof.rows).targets().cpu().numpy(), target)

    def to_json(self) -> dict[str, Any]:
        """What ``metrics.json`` records (``bagging``)."""
        return self.bagged.to_json(len(self.folds))


def run(
    settings: Settings,
    data: Prepared,
    pre: Preprocessor,
    part: Callable[[Any], Tensors],
    device: str,
    log: Any,
    hooks: dict[str, Any],
    ck: dict[str, Any] | None,
) -> Run:
    """`pipeline train`'s steps 3 and 4, bagged: the folds of the training and validation rows,
    a network trained per fold (``train_folds``; ``hooks`` save checkpoints and turn a stop into
    its exception), the networks merged, and their out-of-fold outputs."""
    from pipeline.log import EpochProgress
    from pipeline.tensors import network_config

    rows = np.sort(np.concatenate([data.split.train, data.split.val]))
    k = folds_for(settings, len(rows))
    labels = None if pre.target.task == "regression" else part(rows).targets().cpu().numpy()
    folds = parts(rows, k, data.seeds.split, labels)
    cfg = fold_config(network_config(pre, settings), settings, k)
    progress = EpochProgress(settings.train.max_epochs, log)

    def epoch(fold: int, row: dict[str, Any]) -> None:
        if row["epoch"] == 1 and fold:
            progress.bar.reset(total=settings.train.max_epochs)
        progress.bar.set_description(f"fold {fold + 1}/{k}")
        progress.selection_epoch({"fold": fold, **row})

    try:
        bagged = train_folds(cfg, settings, folds, part, pre, device, {**hooks, "epoch": epoch}, ck)
    finally:
        progress.bar.close()
    return Run(merge(bagged.models), bagged, folds, out_of_fold(bagged.models, folds, part))
