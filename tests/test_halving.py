"""Successive halving's arithmetic and decisions, and how a trial's folds combine: decided from
scores alone, so a search is the same whatever the concurrency or the order results arrive in
(tests/test_tune.py runs it on Ray)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import halving, search, trials, tune


def test_rungs_grow_by_the_reduction_up_to_every_fold() -> None:
    assert halving.rungs(5, 3) == [1, 3, 5]
    assert halving.rungs(5, 2) == [1, 2, 4, 5]
    assert halving.rungs(3, 3) == [1, 3]
    assert halving.rungs(2, 10) == [1, 2]
    assert [halving.kept(n, 3) for n in (1, 2, 3, 4, 8, 9, 27)] == [1, 1, 1, 2, 3, 3, 9]


def test_survivors_are_the_best_scores_ties_by_trial_and_failures_never() -> None:
    scores = {0: 0.30, 1: 0.10, 2: None, 3: 0.10, 4: float("nan"), 5: 0.20}
    assert halving.survivors(scores, 2, maximise=False) == [1, 3]
    assert halving.survivors(scores, 3, maximise=False) == [1, 3, 5]
    assert halving.survivors(scores, 1, maximise=True) == [0]
    assert halving.survivors({7: None}, 1, maximise=False) == []
    # The order scores arrive in does not matter.
    shuffled = dict(sorted(scores.items(), key=lambda kv: -kv[0]))
    assert halving.survivors(shuffled, 3, maximise=False) == [1, 3, 5]


def test_a_trials_folds_combine_to_the_same_scores_however_they_were_split() -> None:
    """Folds 0-4 run at once, or 0 then 1-2 then 3-4 (halving's rungs, or a resumed search):
    the same means, bit for bit, as cross_validate's summary computes them."""
    rng = np.random.default_rng(0)
    per_fold = {
        str(i): {"metrics": {"rmse": float(rng.random()), "r2": float(rng.random())},
                 "epochs": int(rng.integers(5, 50))}
        for i in range(5)
    }  # fmt: skip
    whole, epochs = search.fold_summary(per_fold)
    assert whole["rmse"] == float(np.array([per_fold[str(i)]["metrics"]["rmse"]
                                            for i in range(5)]).mean())  # fmt: skip
    state: dict[int, dict] = {}
    for part in ((0,), (1, 2), (3, 4)):
        piece = {str(i): per_fold[str(i)] for i in part}
        metrics, e = search.fold_summary(piece)
        trials.merge(state, {"trial": 3, "status": "ok", "score": metrics["rmse"],
                            "metrics": metrics, "epochs": e, "seconds": 1.0,
                            "per_fold": piece})  # fmt: skip
    assert state[3]["metrics"] == whole and state[3]["epochs"] == epochs
    assert state[3]["seconds"] == 3.0


def test_a_rung_compares_its_own_folds_even_when_a_resumed_search_holds_more() -> None:
    """A search interrupted after trial 0 ran folds 1-2 resumes holding its three folds: the
    first rung still compares fold 0 alone, as the uninterrupted search did (it kept trial 2
    there, and the resumed one, comparing trial 0's three-fold mean, stopped it)."""
    per_fold = {"0": {"metrics": {"log_loss": 0.46}, "epochs": 6},
                "1": {"metrics": {"log_loss": 0.45}, "epochs": 6},
                "2": {"metrics": {"log_loss": 0.44}, "epochs": 6}}  # fmt: skip
    state: dict[int, dict] = {}
    metrics, epochs = search.fold_summary(per_fold)
    trials.merge(state, {"trial": 0, "status": "ok", "metrics": metrics, "epochs": epochs,
                        "seconds": 1.0, "per_fold": per_fold})  # fmt: skip
    assert tune._rung_score(state[0], 1, "log_loss") == 0.46
    assert tune._rung_score(state[0], 3, "log_loss") == pytest.approx(0.45)


def test_ranking_puts_complete_trials_first_then_stopped_by_folds_then_failed() -> None:
    def row(trial: int, status: str, score: float | None, folds: int) -> dict:
        return {"trial": trial, "status": status, "score": score, "folds": folds}

    ranked = tune._rank(
        [row(0, "stopped", 0.05, 1), row(1, "ok", 0.30, 5), row(2, "failed", None, 0),
         row(3, "stopped", 0.20, 3), row(4, "ok", 0.25, 5), row(5, "stopped", 0.01, 1)],
        "rmse",
    )  # fmt: skip
    assert [t["trial"] for t in ranked] == [4, 1, 3, 5, 0, 2]
    assert [t["rank"] for t in ranked] == [1, 2, 3, 4, 5, 6]


def test_halving_needs_folds_to_spend() -> None:
    """With validation scoring there are no folds to spend: a one-line config error."""
    from pipeline.errors import ConfigError
    from pipeline.settings import load

    env = {"PIPELINE_TUNE__SCHEDULER": "halving", "PIPELINE_TUNE__SCORING": "validation"}
    settings = load(environ=env, env_file=None).settings
    with pytest.raises(ConfigError, match="PIPELINE_TUNE__SCORING=cv"):
        tune._schedule(settings, None)
    assert tune._schedule(settings, 5) == [1, 3, 5]
    plain = load(environ={}, env_file=None).settings
    assert tune._schedule(plain, 5) == [5] and tune._schedule(plain, None) == [None]
