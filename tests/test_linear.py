"""The linear model beside the network (``pipeline.linear``) and how the network carries it.

The fits are checked against their definitions (normal equations, brute-force leave-one-out,
the gradient at the optimum), the blend rule on its edge cases, and the blended network for
the properties every network has: a stored build loads to the same outputs, and a row's output
bytes do not depend on the batch it is scored in.
"""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
import torch

from pipeline import linear
from pipeline.model import FoldedNetwork, ModelConfig, TabularMLP, load_model

CARDS = (4, 3)


def _table(n: int = 80, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    c = np.stack([rng.integers(0, card, n) for card in CARDS], axis=1)
    y = x @ np.array([1.0, -2.0, 0.5]) + 0.7 * (c[:, 0] == 2) + rng.normal(0, 0.3, n)
    return x, c, y


def _solve(d: np.ndarray, y: np.ndarray, w: np.ndarray, penalty: np.ndarray) -> np.ndarray:
    """Weighted ridge by its normal equations: (D'WD + P) theta = D'Wy."""
    a = d * w[:, None]
    return np.linalg.lstsq(d.T @ a + penalty, a.T @ y, rcond=None)[0]


def test_ridge_path_solves_the_weighted_normal_equations_and_its_loo_is_exact() -> None:
    """Each penalty's coefficients solve (X'WX + sum(w) l2 P) theta = X'Wy with the intercept
    unpenalised, W Huber's weights from the plain ridge's leave-one-out residuals at its best
    penalty; and the closed-form leave-one-out error equals n refits without one row (each with
    the same weights and total penalty, as scikit-learn's RidgeCV defines it), weighted."""
    x, c, y = _table(40)
    y[[3, 17]] += np.array([6.0, -5.0])  # two rows the others cannot explain
    models, loo = linear.path(x, c, y, CARDS)
    assert len(models) == len(loo) == len(linear.L2_PATH)
    d = np.hstack([np.ones((len(y), 1)), linear.design(x, c, CARDS)])
    n, every = len(y), np.arange(len(y))

    def penalty(l2: float, total: float) -> np.ndarray:
        p = np.eye(d.shape[1]) * l2 * total
        p[0, 0] = 0.0
        return p

    def loo_residuals(w: np.ndarray, l2: float) -> np.ndarray:
        out = []
        for i in range(n):
            keep = every != i
            theta = _solve(d[keep], y[keep], w[keep], penalty(l2, w.sum()))
            out.append(y[i] - d[i] @ theta)
        return np.array(out)

    plain = [np.mean(loo_residuals(np.ones(n), l2) ** 2) for l2 in linear.L2_PATH]
    best = linear.L2_PATH[int(np.argmin(plain))]
    r = loo_residuals(np.ones(n), best)
    scale = 1.4826 * np.median(np.abs(r - np.median(r)))
    w = np.minimum(1.0, linear.HUBER / (np.abs(r) / scale))
    assert w[3] < 0.5 and w[17] < 0.5 and np.sum(w < 1.0) <= 6  # the two rows, and few others
    for at in (2, 6):
        l2 = linear.L2_PATH[at]
        got = models[at](x, c, CARDS)[:, 0]
        # To the grid the coefficients are rounded to: 2^-24 of the largest (linear._on_grid).
        want = d @ _solve(d, y, w, penalty(l2, w.sum()))
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
        assert loo[at] == pytest.approx(np.sum(w * loo_residuals(w, l2) ** 2) / w.sum(), rel=1e-8)


def test_rows_the_others_cannot_explain_barely_move_the_ridge() -> None:
    """Huber's weights: a few grossly wrong targets among the training rows (a partial sale
    priced as a house) move the ridge's predictions on clean rows far less than they move a
    plain least-squares ridge; on clean rows the weights leave most rows whole."""
    x, c, y = _table(200, seed=3)
    clean = linear.path(x, c, y, CARDS)[0][6](x, c, CARDS)[:, 0]
    bad = y.copy()
    bad[:4] += 8.0
    robust = linear.path(x, c, bad, CARDS)[0][6](x, c, CARDS)[:, 0]
    d = np.hstack([np.ones((len(y), 1)), linear.design(x, c, CARDS)])
    p = np.eye(d.shape[1]) * linear.L2_PATH[6] * len(y)
    p[0, 0] = 0.0
    plain = d @ _solve(d, bad, np.ones(len(y)), p)
    moved, moved_plain = np.abs(robust - clean)[4:].mean(), np.abs(plain - clean)[4:].mean()
    assert moved < moved_plain / 4, (moved, moved_plain)
    r = y - clean
    assert np.mean(linear.huber_weights(r) == 1.0) > 0.9


def test_the_blend_must_earn_its_place() -> None:
    """Ties keep the network alone; a better ridge gets the largest share allowed (half); the
    penalty is the one with the least leave-one-out error, not the validation rows' choice."""
    y = np.array([0.0, 1.0, 2.0, 3.0])
    network = (y + np.array([0.5, -0.5, 0.5, -0.5]))[:, None]
    loo = [1.0] * len(linear.L2_PATH)
    loo[3] = 0.5
    same = [network.copy() for _ in linear.L2_PATH]
    blend = linear.choose(network, same, y, loo)
    assert blend.weight == 1.0 and blend.loss == blend.network_loss
    exact = [y[:, None] + 0.1 * i for i in range(len(linear.L2_PATH))]
    exact[3] = y[:, None]
    blend = linear.choose(network, exact, y, loo)
    assert blend.weight == min(linear.WEIGHTS) == 0.5 and blend.l2 == linear.L2_PATH[3]
    assert blend.loss < blend.network_loss
    loo[0] = 0.1  # the validation rows would prefer penalty 3; leave-one-out says 0
    assert linear.choose(network, exact, y, loo).l2 == linear.L2_PATH[0]


def test_unclip_undoes_smooth_clipping() -> None:
    """The network's smoothly clipped inputs come back straight for the linear model."""
    x = np.array([[-4.0, 0.0, 0.3, 2.0, 7.0]])
    radius = 1.5
    clipped = x / np.sqrt(1 + (x / radius) ** 2)
    inverse = np.full(x.shape[1], 1 / radius)
    np.testing.assert_allclose(linear.unclip(clipped, inverse), x, rtol=1e-9)
    np.testing.assert_array_equal(linear.unclip(x, np.zeros(x.shape[1])), x)  # not clipped


def _blended_model(outputs: int = 1) -> tuple[TabularMLP, np.ndarray]:
    cfg = ModelConfig(
        n_numeric=3, cardinalities=CARDS, embedding_dims=(2, 2), hidden=(8,), dropout=0.0,
        n_outputs=outputs, members=2,
    )  # fmt: skip
    model = TabularMLP(cfg, torch.Generator().manual_seed(0)).eval()
    rng = np.random.default_rng(3)
    inverse = np.array([1 / 1.5, 1 / 1.5, 0.0])
    model.attach_linear(
        0.75,
        inverse,
        rng.normal(size=(3, outputs)),
        rng.normal(size=(sum(CARDS), outputs)),
        rng.normal(size=outputs),
    )
    return model, inverse


def test_the_blended_network_is_the_weighted_sum_and_survives_storage() -> None:
    """output = w * network + (1 - w) * linear(unclipped inputs); a build's files give back the
    same outputs; the folded inference network matches to float32 rounding."""
    model, inverse = _blended_model(3)
    x, c, _ = _table(50)
    xs = torch.from_numpy((x / np.sqrt(1 + (x / 1.5) ** 2)).astype(np.float32))
    cs = torch.from_numpy(c.astype(np.int64))
    with torch.no_grad():
        network = model.members_forward(xs, cs).mean(dim=0).double().numpy()
        got = model(xs, cs).double().numpy()
    lin = linear.Linear(
        model.linear_numeric.double().numpy(),  # type: ignore[operator]
        model.linear_categorical.double().numpy(),  # type: ignore[operator]
        model.linear_bias.double().numpy(),  # type: ignore[operator]
    )
    expected = 0.75 * network + 0.25 * lin(linear.unclip(xs.numpy(), inverse), c, CARDS)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    assert model.cfg.to_json()["blend"] == 0.75
    loaded = load_model(model.cfg.to_json(), buffer.getvalue())
    assert torch.equal(loaded(xs, cs), model(xs, cs))
    folded = FoldedNetwork(model)(xs, cs).double().numpy()
    np.testing.assert_allclose(folded, got, rtol=1e-4, atol=1e-5)
    # A network without a linear model stores none, and reads its old model.json.
    plain = replace(model.cfg, blend=1.0).to_json()
    assert "linear_bias" not in TabularMLP(ModelConfig.from_json(plain)).state_dict()


def test_a_rows_blended_output_does_not_depend_on_its_batch() -> None:
    """The folded network with a linear part: every row's bytes are the same scored alone, in
    any batch size, or shuffled among others."""
    model, _ = _blended_model()
    x, c, _ = _table(200, seed=4)
    xs, cs = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(c.astype(np.int64))
    network = FoldedNetwork(model)
    whole = network(xs, cs)
    for size in (1, 7, 64, 99):
        parts = [network(xs[i : i + size], cs[i : i + size]) for i in range(0, 200, size)]
        assert torch.equal(torch.cat(parts), whole), size
    order = torch.from_numpy(np.random.default_rng(5).permutation(200))
    assert torch.equal(network(xs[order], cs[order]), whole[order])


def test_coefficients_on_the_grid_do_not_carry_rounding_noise() -> None:
    """numpy's BLAS sums in a thread-dependent order: a perturbation of 1e-15 of the largest
    coefficient leaves every value on the same grid point, and noise around 0 is +0, not -0."""
    rng = np.random.default_rng(7)
    beta = rng.normal(size=200) * np.logspace(-20, 0, 200)
    noisy = beta + rng.normal(size=200) * 1e-15 * np.abs(beta).max()
    on, again = linear._on_grid(beta), linear._on_grid(noisy)
    moved = on != again
    assert moved.sum() <= 1  # only a value within 1e-15 of a midpoint could move
    tiny = linear._on_grid(np.array([-1e-30, 1e-30, 0.5]))
    assert tiny.tolist() == [0.0, 0.0, 0.5] and not np.signbit(tiny[0])
    step = 2.0 ** (np.floor(np.log2(np.abs(beta).max())) - 24)
    assert np.all(np.abs(on - beta) <= step / 2)
