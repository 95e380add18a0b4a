"""The fitting loop on its own, on tiny tensors: early stopping, best weights, resume equality.

These run in milliseconds: no dataset, no store, no CLI. ``fit.fit`` is what `pipeline train`
and `pipeline evaluate --folds` call, and what a worker process will call.
"""

from __future__ import annotations

import io
import os
import signal
from typing import Any

import numpy as np
import pytest
import torch

from pipeline import fit
from pipeline.features import Encoded, TargetState
from pipeline.model import ModelConfig
from pipeline.settings import TrainSettings
from pipeline.split import Seeds

TARGET = TargetState(name="y", task="regression", transform="none")
CFG = ModelConfig(
    n_numeric=3, cardinalities=(5,), embedding_dims=(2,), hidden=(8,), dropout=0.1, n_outputs=1
)


def _data(n: int = 96) -> fit.Tensors:
    """A noisy linear target of three numbers and one category: something to learn."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    c = rng.integers(0, 5, size=(n, 1)).astype(np.int64)
    y = (x @ np.array([1.0, -2.0, 0.5]) + 0.3 * c[:, 0] + rng.normal(0, 0.5, n)).astype(np.float32)
    return fit.Tensors.all(Encoded(x, c, y), "cpu")


def _run(t: TrainSettings, **kwargs: Any) -> fit.Fitted:
    data = _data()
    train, val = data.select(np.arange(0, 64)), data.select(np.arange(64, 96))
    return fit.fit(CFG, train, val, TARGET, t, Seeds.from_seed(7), "cpu", **kwargs)


def _weights(fitted: fit.Fitted) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in fitted.model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_early_stopping_waits_patience_epochs_after_the_best() -> None:
    """The loop stops exactly ``patience`` epochs after the lowest validation loss (or at max)."""
    t = TrainSettings(max_epochs=60, patience=3, batch_size=16, learning_rate=0.05)
    fitted = _run(t)
    losses = [row["val_loss"] for row in fitted.history]
    best = int(np.argmin(losses)) + 1
    assert fitted.best_epoch == best
    assert len(fitted.history) == min(best + t.patience, t.max_epochs)
    assert fitted.stopped_early == (len(fitted.history) < t.max_epochs)
    assert [row["epoch"] for row in fitted.history] == list(range(1, len(losses) + 1))


def test_the_best_epochs_weights_are_restored() -> None:
    """The returned network scores the best epoch's validation loss, not the last epoch's."""
    t = TrainSettings(max_epochs=60, patience=3, batch_size=16, learning_rate=0.05)
    fitted = _run(t)
    data = _data()
    val = data.select(np.arange(64, 96))
    out = fit.forward_all(fitted.model, val.numeric, val.categorical, val.rows)
    loss = float(fit.loss_fn("regression")(out, val.targets()).mean())
    assert loss == pytest.approx(fitted.history[fitted.best_epoch - 1]["val_loss"], rel=1e-6)
    assert fitted.best_epoch < len(fitted.history)  # so restoring mattered


def test_fixed_epochs_train_exactly_that_many_and_keep_the_last() -> None:
    """With ``epochs`` (the refit) the loop runs that many epochs and never stops early."""
    fitted = _run(TrainSettings(max_epochs=50, patience=1, batch_size=16), epochs=4)
    assert len(fitted.history) == 4
    assert fitted.best_epoch == 4


def test_same_seeds_same_weights_other_seed_other_weights() -> None:
    """Two runs with one seed give identical weights; the loop uses no global randomness."""
    t = TrainSettings(max_epochs=5, patience=5, batch_size=16)
    torch.manual_seed(123)  # the caller's global RNG must not matter
    a = _weights(_run(t))
    torch.manual_seed(456)
    b = _weights(_run(t))
    assert _same(a, b)
    data = _data()
    other = fit.fit(
        CFG, data.select(np.arange(64)), None, TARGET, t, Seeds.from_seed(8), "cpu", epochs=5
    )
    assert not _same(a, _weights(other))


def test_resume_from_an_epoch_checkpoint_gives_the_same_weights() -> None:
    """A run continued from its epoch-2 state ends with the uninterrupted run's weights."""
    t = TrainSettings(max_epochs=6, patience=6, batch_size=16, checkpoint_every=2)
    states: list[fit.FitState] = []
    whole = _run(t, on_checkpoint=states.append)
    assert [s.epoch for s in states] == [3, 5]  # saved after epochs 2 and 4: resume at the next
    buf = io.BytesIO()
    torch.save(states[0].to_dict(), buf)  # as a checkpoint file holds it
    buf.seek(0)
    first = fit.FitState.from_dict(torch.load(buf, weights_only=True))
    resumed = _run(t, resume=first)
    assert _same(_weights(whole), _weights(resumed))
    assert resumed.history == whole.history


def test_a_signal_stops_at_a_batch_boundary_and_resume_matches() -> None:
    """SIGTERM mid-run raises ``Stopped`` with the state; resuming it reproduces the weights."""
    t = TrainSettings(max_epochs=5, patience=5, batch_size=16)
    whole = _weights(_run(t))

    def interrupt(row: dict[str, Any]) -> None:
        if row["epoch"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(fit.Stopped) as stopped:
        _run(t, on_epoch=interrupt)
    assert signal.getsignal(signal.SIGTERM) is before  # the caller's handler is back
    state = stopped.value.state
    assert stopped.value.signum == signal.SIGTERM
    assert (state.epoch, state.position) == (3, 16)  # one batch into epoch 3
    assert _same(whole, _weights(_run(t, resume=state)))


def test_ensemble_members_differ_and_the_model_is_their_mean() -> None:
    """Each member has its own initialisation and loss; the output is the members' mean, and a
    single-member model stored before ensembles existed still loads."""
    from dataclasses import replace

    from pipeline.model import load_model

    cfg = replace(CFG, members=3)
    data = _data()
    t = TrainSettings(max_epochs=5, patience=5, batch_size=16)
    fitted = fit.fit(
        cfg, data.select(np.arange(64)), data.select(np.arange(64, 96)), TARGET, t,
        Seeds.from_seed(7), "cpu",
    )  # fmt: skip
    model = fitted.model.eval()
    x, c = data.numeric[:10], data.categorical[:10]
    each = model.members_forward(x, c)
    assert each.shape == (3, 10, 1) and not torch.equal(each[0], each[1])
    assert torch.equal(model(x, c), each.mean(dim=0))
    # A build from before ensembles: plain nn.Linear weights and no "members" in model.json.
    single = fit.fit(
        CFG, data.select(np.arange(64)), None, TARGET, t, Seeds.from_seed(7), "cpu", epochs=2
    ).model.eval()
    legacy = {k: v.squeeze(0) if k.startswith(("body.", "head.")) else v
              for k, v in single.state_dict().items()}  # fmt: skip
    buffer = io.BytesIO()
    torch.save(legacy, buffer)
    config = {k: v for k, v in CFG.to_json().items() if k != "members"}
    loaded = load_model(config, buffer.getvalue())
    assert torch.equal(loaded(x, c), single(x, c))


def test_label_smoothing_changes_the_training_loss_only() -> None:
    """Smoothing moves probability mass in the training loss; early stopping's loss is plain."""
    out = torch.tensor([[4.0], [-4.0]])
    y = torch.tensor([1, 0])
    plain, smoothed = fit.loss_fn("binary"), fit.loss_fn("binary", 0.2)
    assert float(smoothed(out, y).mean()) > float(plain(out, y).mean()) > 0
    logits = torch.tensor([[3.0, 0.0, 0.0]])
    assert float(fit.loss_fn("multiclass", 0.1)(logits, torch.tensor([0]))[0]) > float(
        fit.loss_fn("multiclass")(logits, torch.tensor([0]))[0]
    )
