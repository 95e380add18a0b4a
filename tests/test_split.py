"""Seeds, the train/validation/test split and K-fold parts: pure functions of the seed."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from pipeline.split import Seeds, folds, split_rows


def test_seeds_are_distinct_streams_and_stable() -> None:
    """One seed gives four different integer seeds, the same ones every time."""
    seeds = Seeds.from_seed(42)
    assert len({seeds.split, seeds.init, seeds.shuffle, seeds.dropout}) == 4
    assert Seeds.from_seed(42) == seeds
    assert Seeds.from_seed(43) != seeds


@given(n=st.integers(3, 500), seed=st.integers(0, 2**32))
def test_the_split_is_a_partition_of_the_rows(n: int, seed: int) -> None:
    """Train, validation and test are sorted, disjoint and cover every row."""
    s = split_rows(n, None, 0.15, 0.2, seed)
    everything = np.concatenate([s.train, s.val, s.test])
    assert sorted(everything.tolist()) == list(range(n))
    for part in (s.train, s.val, s.test):
        assert np.all(np.diff(part) > 0)
    assert len(s.test) == round(n * 0.2) and len(s.val) == round(n * 0.15)


def test_the_same_seed_gives_the_same_split_and_digest() -> None:
    """The digest names exactly these rows: equal for a rerun, different for another seed."""
    a, b = split_rows(1000, None, 0.15, 0.2, 5), split_rows(1000, None, 0.15, 0.2, 5)
    assert a.digest() == b.digest()
    assert np.array_equal(a.test, b.test)
    assert split_rows(1000, None, 0.15, 0.2, 6).digest() != a.digest()


def test_stratification_keeps_each_class_share() -> None:
    """With labels, every part has each class in proportion (a rare class is not lost)."""
    labels = np.array(["a"] * 900 + ["b"] * 100, dtype=object).astype(str)
    s = split_rows(len(labels), labels, 0.15, 0.2, 1)
    assert (labels[s.test] == "b").sum() == 20
    assert (labels[s.val] == "b").sum() == 15
    assert (labels[s.train] == "b").sum() == 65


def test_folds_hold_each_row_out_once_and_never_train_on_it() -> None:
    """K folds hold every row out exactly once; a fold's fit and validation rows exclude it."""
    rows = np.arange(10, 110)
    parts = folds(rows, 5, 0.15, 3)
    held = np.concatenate([h for _, _, h in parts])
    assert sorted(held.tolist()) == rows.tolist()
    for fit_rows, val_rows, out in parts:
        assert not set(out) & (set(fit_rows) | set(val_rows))
        assert not set(fit_rows) & set(val_rows)
        assert len(fit_rows) + len(val_rows) + len(out) == len(rows)
        assert len(val_rows) == round(80 * 0.15)


def test_folds_are_stratified_by_class_when_labels_are_given() -> None:
    """As scikit-learn's StratifiedKFold: each held-out part holds every class in proportion
    (within one row), each fold's validation slice takes its share of every class, parts
    differ in size by at most one, and a class of two rows is in every fold's training rows
    (unstratified, it missed one and the fold was refused). Every row is held out once, and
    the same seed gives the same folds."""
    rows = np.arange(100, 400)
    labels = np.array(["a"] * 240 + ["b"] * 58 + ["c"] * 2, dtype=object).astype(str)
    labels = labels[np.random.default_rng(0).permutation(len(labels))]
    parts = folds(rows, 5, 0.15, 3, labels)
    assert [p[2].tolist() for p in parts] == [
        p[2].tolist() for p in folds(rows, 5, 0.15, 3, labels)
    ]
    held = np.concatenate([h for _, _, h in parts])
    assert sorted(held.tolist()) == rows.tolist()
    of = dict(zip(rows.tolist(), labels.tolist(), strict=True))
    sizes = [len(h) for _, _, h in parts]
    assert max(sizes) - min(sizes) <= 1
    for fit_rows, val_rows, out in parts:
        assert not set(out) & (set(fit_rows) | set(val_rows)) and not set(fit_rows) & set(val_rows)
        assert len(fit_rows) + len(val_rows) + len(out) == len(rows)
        counts = {c: sum(of[r] == c for r in out.tolist()) for c in "abc"}
        assert abs(counts["a"] - 48) <= 1 and abs(counts["b"] - 58 / 5) <= 1, counts
        assert "c" in {of[r] for r in fit_rows.tolist()}  # the class of two rows trains
        val = {c: sum(of[r] == c for r in val_rows.tolist()) for c in "abc"}
        rest = {c: sum(of[r] == c for r in [*fit_rows.tolist(), *val_rows.tolist()]) for c in "abc"}
        assert all(val[c] == round(rest[c] * 0.15) for c in "abc"), (val, rest)
    unstratified = folds(rows, 5, 0.15, 3)
    assert [p[2].tolist() for p in unstratified] != [p[2].tolist() for p in parts]
