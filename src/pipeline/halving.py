"""Successive halving for `pipeline tune`, with cross-validation folds as the budget.

Every trial is scored on the first fold; the best ``1 / reduction`` of them go on to more folds
(``reduction`` times as many), and so on until the survivors have been scored on all K folds:
with K = 5 and a reduction of 3, 27 trials cost 27 + 9 x 2 + 3 x 2 = 51 fold fits instead of
135. The decisions are taken at synchronous rungs, once every trial of the rung has its
scores, from the scores alone (ties by trial number): the same trials survive whatever the
concurrency, the cluster or the order in which results arrive, and a resumed search takes
the decisions again from the stored fold scores. A trial that stops early keeps the scores
of the folds it ran (status ``stopped``); only trials scored on every fold can win. Trial 0,
the current configuration, always goes on (``tune``): the winner is never worse than it.
"""

from __future__ import annotations

import math


def rungs(folds: int, reduction: int) -> list[int]:
    """How many folds each rung has scored by its end: 1, r, r^2, ... and then all K."""
    out, spent = [], 1
    while spent < folds:
        out.append(spent)
        spent *= reduction
    return [*out, folds]


def kept(trials: int, reduction: int) -> int:
    """How many of ``trials`` go on to the next rung (at least one)."""
    return max(1, -(-trials // reduction))


def survivors(scores: dict[int, float | None], keep: int, maximise: bool) -> list[int]:
    """The ``keep`` best trials by score (failed ones, scored None, never), by trial number."""
    sign = -1.0 if maximise else 1.0
    ranked = sorted(
        (sign * score, trial)
        for trial, score in scores.items()
        if score is not None and math.isfinite(score)
    )
    return sorted(trial for _, trial in ranked[:keep])
