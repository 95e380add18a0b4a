"""A ridge regression on the network's inputs, and the weight that blends the two.

On small, nearly linear tables a ridge regression beats the MLP, and gradient boosting besides
(scikit-learn's diabetes, ISLR's Carseats); on house prices the two are close, and their blend
beats both. Rather than guess, training fits the ridge beside the network: robust to rows the
others cannot explain (Huber's weights, ``path``), its penalty by exact leave-one-out error on
the training rows (as scikit-learn's RidgeCV), then the share ``w`` of
the network in ``w * network + (1 - w) * ridge`` on the validation rows that already chose the
epoch count (AutoGluon's weighted ensemble on a holdout, reduced to one weight on a fixed grid).
``w = 1`` (the network alone) wins ties, so a table where the ridge does not help keeps the
network alone; and ``w`` stays at least 1/2: on house prices seed 7 the ridge alone prices a
huge partial sale (Id 1299) at 3.5 times its price, from size columns that each sit within
their training range but add up, and given 3/4 of the output it lost that seed 0.003.
Classification keeps the network alone: a logistic regression blended the same way lowered
the mean accuracy of `make bench-quality`'s nine classification tables.

The ridge sees exactly the network's inputs: the preprocessed numeric columns, smoothing of
the clipping undone (``unclip``), and a one-hot column per category (category ``c`` of column
``j`` is one weight). It predicts the network's output (the standardised target), so the
blend is one multiply-add. Everything here is float64 numpy: the same rows give the same
weights, rounded to float32 once, when the network takes them. The design is built in memory,
so the ridge is fitted only when it is small (``MAX_CELLS``, ``MAX_INPUTS``): the blend is for
small tables, where it pays and costs milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Penalties tried (per row: the mean loss plus l2 * ||beta||^2), strongest first.
L2_PATH = (10.0, 3.0, 1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001, 0.0001)
# The network's share in the blend, tried from 1 (the network alone) down to 1/2.
WEIGHTS = (1.0, 0.75, 0.5)
# The design is built in memory: rows x inputs at most this many float64 cells (32 MB).
MAX_CELLS = 4_000_000
# Huber's threshold, in robust standard deviations of the leave-one-out residuals (``path``):
# 2 rather than the textbook 1.345, which gave up more on clean tables and gained nothing here.
HUBER = 2.0
# Inputs (numeric columns + categories): the SVD costs rows x inputs^2.
MAX_INPUTS = 1024
# Smooth clipping is undone down to this (``unclip``): inputs at most 1000x their clipped value.
FLOOR = 1e-6


@dataclass(frozen=True)
class Linear:
    """A fitted linear model: numeric [F, K], one row per category [sum(cards), K], bias [K]."""

    numeric: np.ndarray
    categorical: np.ndarray
    bias: np.ndarray

    def __call__(self, x: np.ndarray, c: np.ndarray, cards: tuple[int, ...]) -> np.ndarray:
        """Outputs [N, K] for numeric ``x`` [N, F] and categorical codes ``c`` [N, C]."""
        return design(x, c, cards) @ np.vstack([self.numeric, self.categorical]) + self.bias


@dataclass(frozen=True)
class Blend:
    """The chosen penalty and network share, with the validation losses that chose them."""

    l2: float
    weight: float
    loss: float
    network_loss: float

    def to_json(self) -> dict[str, float]:
        """What ``metrics.json`` records (``linear``): the ridge's share of the output (1 minus
        the network's), its penalty, and the validation losses that chose them."""
        return {
            "ridge_share": round(1.0 - self.weight, 6),
            "l2": self.l2,
            "val_loss": round(self.loss, 6),
            "network_val_loss": round(self.network_loss, 6),
        }


def fits(rows: int, n_numeric: int, cards: tuple[int, ...]) -> bool:
    """Whether a ridge of this size is fitted at all (``MAX_CELLS``, ``MAX_INPUTS``)."""
    inputs = n_numeric + sum(cards)
    return rows * inputs <= MAX_CELLS and inputs <= MAX_INPUTS


def unclip(x: np.ndarray, inverse_radius: np.ndarray) -> np.ndarray:
    """The network's smoothly clipped numeric inputs [N, F] straight again, in float64:
    ``s / sqrt(1 - (s / r)^2)`` (``inverse_radius`` is 1 / r per column, 0: not clipped)."""
    s = x.astype(np.float64)
    return s / np.sqrt(np.maximum(1.0 - (s * inverse_radius) ** 2, FLOOR))


def design(x: np.ndarray, c: np.ndarray, cards: tuple[int, ...]) -> np.ndarray:
    """[numeric | one-hot of each categorical column] as float64 [N, F + sum(cards)]."""
    n, f = x.shape
    out = np.zeros((n, f + sum(cards)), dtype=np.float64)
    out[:, :f] = x
    at = f
    for j, card in enumerate(cards):
        out[np.arange(n), at + c[:, j]] = 1.0
        at += card
    return out


def _split(theta: np.ndarray, f: int) -> Linear:
    """[bias; weights] [1 + D, 1] as a ``Linear``."""
    return Linear(theta[1 : 1 + f], theta[1 + f :], theta[0])


def path(
    x: np.ndarray, c: np.ndarray, y: np.ndarray, cards: tuple[int, ...]
) -> tuple[list[Linear], list[float]]:
    """The robust ridge fitted on these rows (``y``: the standardised target) for every penalty
    of ``L2_PATH``, in its order, and each one's exact leave-one-out mean squared error (each
    row weighted as in the fit).

    Huber's M-estimate, in one reweighting step: the plain ridge's leave-one-out residuals at
    its best penalty, over their robust scale (1.4826 times their median absolute deviation),
    give each row the weight ``min(1, HUBER / |standardised residual|)``; the ridge is then
    fitted again, every penalty, with those weights (``huber_weights``). A leave-one-out
    residual is the row's error when it is left out: a row the other rows cannot explain (a
    huge house sold cheaply in a partial sale) stands out in it, where it would hide in its own
    fitted residual. Measured with `pipeline train` on house prices, whose training rows hold
    such sales on most seeds: test RMSE of log over seeds 0, 1, 2, 7, 42 from 0.1252 to
    0.1229, lower on each; the other regression tables of `make bench-quality` within 0.5%."""
    d, target = design(x, c, cards), y.astype(np.float64)
    _, loo, residuals = _ridge_path(d, target, np.ones(len(target)))
    weights = huber_weights(residuals[int(np.argmin(loo))])
    thetas, loo, _ = _ridge_path(d, target, weights)
    return [_split(t, x.shape[1]) for t in thetas], loo


def fit(x: np.ndarray, c: np.ndarray, y: np.ndarray, cards: tuple[int, ...], l2: float) -> Linear:
    """The ridge at one penalty of ``L2_PATH`` (``path``: its rows weighted alike)."""
    models, _ = path(x, c, y, cards)
    return models[L2_PATH.index(l2)]


def huber_weights(residuals: np.ndarray) -> np.ndarray:
    """Huber's weights for these residuals: 1 within ``HUBER`` robust standard deviations
    (1.4826 median absolute deviations from the median), ``HUBER / |r / scale|`` beyond. All 1
    when the scale is 0 (most rows fitted exactly: nothing to judge the rest by)."""
    centred = residuals - np.median(residuals)
    scale = 1.4826 * float(np.median(np.abs(centred)))
    if not scale > 0.0:
        return np.ones(len(residuals))
    size = np.abs(residuals) / scale
    return np.where(size <= HUBER, 1.0, HUBER / np.maximum(size, HUBER))


def _ridge_path(
    d: np.ndarray, y: np.ndarray, w: np.ndarray
) -> tuple[list[np.ndarray], list[float], list[np.ndarray]]:
    """Ridge with row weights ``w`` and an unpenalised intercept along the path: it minimises
    the weighted mean squared error plus ``l2 * ||beta||^2``, from one SVD of the design
    centred on its weighted means, each row scaled by its weight's square root (each result
    [1 + D, 1], ``_on_grid``). With each penalty, the leave-one-out mean squared error (each
    row's residual over 1 - its leverage, squared and weighted: exact, as scikit-learn's
    RidgeCV computes it) and the leave-one-out residuals themselves."""
    total = float(w.sum())
    root = np.sqrt(w)
    mean_x, mean_y = (w @ d) / total, float(w @ y) / total
    u, sv, vt = np.linalg.svd((d - mean_x) * root[:, None], full_matrices=False)
    uy = u.T @ ((y - mean_y) * root)
    out, loo, residuals = [], [], []
    for l2 in L2_PATH:
        shrink = sv**2 / (sv**2 + total * l2)
        beta = _on_grid(vt.T @ (uy * sv / (sv**2 + total * l2)))
        bias = _on_grid(np.array([mean_y - np.sum(mean_x * beta)]), of=beta)
        out.append(np.concatenate([bias, beta])[:, None])
        scaled = (y - mean_y) * root - u @ (uy * shrink)  # the residuals, times sqrt(w)
        leverage = w / total + (u**2) @ shrink
        left_out = scaled / np.maximum(1.0 - leverage, 1e-12)
        loo.append(float(np.sum(left_out**2) / total))
        residuals.append(left_out / np.maximum(root, 1e-12))
    return out, loo, residuals


def _on_grid(values: np.ndarray, of: np.ndarray | None = None) -> np.ndarray:
    """``values`` rounded to multiples of 2^-24 times the largest of ``of`` (default: of
    themselves), a power of two: float32's resolution at the largest coefficient.

    numpy's BLAS sums in an order that depends on its thread count (OPENBLAS_NUM_THREADS), so
    the SVD's coefficients differ between machines in their last float64 bits; those of
    categories the training rows never show are pure rounding noise near 0, which float32
    would keep. On the grid, noise 1e-15 of the largest coefficient cannot move a value
    (unless it lies within that of a grid point's midpoint), and the weights' bytes, so the
    build id, are the same on every machine (tests/test_train.py)."""
    scale = np.abs(values if of is None else of).max(initial=0.0)
    if scale == 0.0 or not np.isfinite(scale):
        return values
    step = 2.0 ** (np.floor(np.log2(scale)) - 24)
    return np.round(values / step) * step + 0.0  # + 0.0: noise below half a step is 0, not -0


def loss(out: np.ndarray, y: np.ndarray) -> float:
    """The validation loss of outputs [N, 1]: what early stopping compares (mean squared error
    of the standardised target)."""
    return float(np.mean((out[:, 0] - y) ** 2))


def choose(
    network: np.ndarray, candidates: list[np.ndarray], y: np.ndarray, loo: list[float]
) -> Blend:
    """The network share with the lowest validation loss, given the network's validation
    outputs [N, 1] and each penalty's ridge outputs; the penalty is the one with the least
    leave-one-out error on the training rows (a hundred validation rows are too few to pick
    both). Ties go to the larger network share: the blend must earn its place."""
    alone = loss(network, y)
    at = int(np.argmin(loo))  # the first of equals: the stronger penalty
    best = Blend(L2_PATH[at], 1.0, alone, alone)
    for weight in WEIGHTS[1:]:
        value = loss(weight * network + (1.0 - weight) * candidates[at], y)
        if value < best.loss:
            best = Blend(L2_PATH[at], weight, value, alone)
    return best
