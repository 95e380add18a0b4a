"""Category values that predict has never seen but that are a known one spelt otherwise.

A Titanic file with ``Male`` for ``male`` scored 70% of its rows with their strongest feature
unknown, and only a count in ``predict.summary`` (``unknown_categories``) said so: an unseen
value is normal (a cabin seen once in training is unknown too), so the count alone cannot be
a warning. One that matches a vocabulary entry but for case and surrounding spaces is a
spelling the user can fix, and `predict` names it (``predict.misspelt_categories``).

The values are sampled from the first ``SAMPLE_ROWS`` rows, at most ``PER_COLUMN`` distinct
per column, and only for the columns whose chunk held unknown values: a run over millions of
rows pays for the first chunks alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

SAMPLE_ROWS = 100_000
PER_COLUMN = 50


@dataclass
class Unseen:
    """Distinct unknown values per column, from the first rows of a run."""

    values: dict[str, set[str]] = field(default_factory=dict)
    rows: int = 0

    def note(self, frame: pd.DataFrame, unknown: dict[str, int], vocabs: dict[str, Any]) -> None:
        """Add the unknown values of ``frame``'s columns named in ``unknown`` (chunk counts)."""
        import pandas as pd

        from pipeline.features.categories import as_categories

        if self.rows >= SAMPLE_ROWS:
            return
        self.rows += len(frame)
        for name in unknown:
            seen = self.values.setdefault(name, set())
            if name not in vocabs or len(seen) >= PER_COLUMN:
                continue
            values = pd.unique(as_categories(frame[name]))
            known = vocabs[name]
            fresh = (v for v in values if v is not None and v not in known and v not in seen)
            for value in fresh:
                seen.add(value)
                if len(seen) >= PER_COLUMN:
                    break

    def misspelt(self, vocabs: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
        """Per column, (value given, value known) for the unknown values that are a known one
        but for case and surrounding spaces; sorted, so the warning is the same every run."""
        found: dict[str, list[tuple[str, str]]] = {}
        for name, seen in sorted(self.values.items()):
            by_key = folded(vocabs.get(name, ()))
            pairs = [(v, by_key[key(v)]) for v in sorted(seen) if key(v) in by_key]
            if pairs:
                found[name] = pairs
        return found


def key(value: str) -> str:
    """The spelling rule: two values are one category spelt otherwise when their keys match
    (case and surrounding spaces aside)."""
    return value.strip().casefold()


def folded(vocab: Iterable[str]) -> dict[str, str]:
    """A vocabulary by ``key``: each known value under its key."""
    return {key(v): v for v in sorted(vocab)}


def warn_misspelt(log: Any, unseen: Unseen, vocabs: dict[str, Any], counts: dict[str, int]) -> None:
    """One ``predict.misspelt_categories`` warning naming each column's respellings."""
    found = unseen.misspelt(vocabs)
    if not found:
        return
    said = "; ".join(
        f"'{name}' ({counts.get(name, 0):,} unknown): "
        + ", ".join(f"'{given}' for '{known}'" for given, known in pairs[:5])
        for name, pairs in found.items()
    )
    log.warning(
        "predict.misspelt_categories",
        columns={name: dict(pairs) for name, pairs in found.items()},
        message=f"values the model never saw that are known ones spelt otherwise (case or "
        f"spaces) were scored as unknown: {said}; categories match exactly: fix their spelling",
    )


# A column whose every present value, of at least this many, is unknown is named (fewer: a
# few unseen tickets or cabins are no sign of anything).
ALL_UNKNOWN_VALUES = 20


def warn_all_unknown(
    log: Any, unseen: Unseen, vocabs: dict[str, Any], counts: dict[str, int], known: set[str]
) -> None:
    """One ``predict.unknown_column`` warning per column none of whose present values (20 or
    more) has a weight in the model (``known``: the columns where some value had one), and not
    only misspelt: another type or format than training's (the numbers 0, 1, 2 where the model
    knows 'red', timestamps in another time zone) scored the whole column as unknown, and only
    a count in ``predict.summary`` said so."""
    misspelt = unseen.misspelt(vocabs)
    for name, count in sorted(counts.items()):
        if count < ALL_UNKNOWN_VALUES or name in known or name in misspelt or name not in vocabs:
            continue
        given, have = _some(unseen.values.get(name, ())), _some(vocabs[name])
        log.warning(
            "predict.unknown_column", column=name, values=count,
            message=f"column '{name}': none of its {count:,} values has a weight in the model "
            f"({given}; it knows {have}): never seen in training, or seen fewer than "
            "PIPELINE_FEATURES__MIN_FREQUENCY times, so the column is scored as unknown in "
            "every row; if these are new categories, that is expected, else check the column's "
            "type and format against the training data's (numbers for text, another date "
            "format or time zone)",
        )  # fmt: skip


def _some(values: Iterable[str], shown: int = 3) -> str:
    """The first ``shown`` of ``values`` in order, quoted, and "..." when there are more."""
    ordered = sorted(values)
    more = ", ..." if len(ordered) > shown else ""
    return ", ".join(repr(v) for v in ordered[:shown]) + more


# (column, value) pairs named in a serve.misspelt_categories event by this process: each once,
# and at most this many (a client sending "Female" in every request is one event, not a flood).
_SAID: set[tuple[str, str]] = set()
_MAX_SAID = 1000


def say_served(misspelt: dict[str, dict[str, str]]) -> None:
    """Log the pairs of a served request not said before (per column, value given -> known):
    predict's ``predict.misspelt_categories``, for serve."""
    fresh = {
        name: {given: known for given, known in pairs.items() if (name, given) not in _SAID}
        for name, pairs in misspelt.items()
    }
    fresh = {name: pairs for name, pairs in fresh.items() if pairs}
    if not fresh or len(_SAID) >= _MAX_SAID:
        return
    _SAID.update((name, given) for name, pairs in fresh.items() for given in pairs)
    said = "; ".join(
        f"'{name}': " + ", ".join(f"'{g}' for '{k}'" for g, k in list(pairs.items())[:5])
        for name, pairs in fresh.items()
    )
    import structlog

    structlog.get_logger().warning(
        "serve.misspelt_categories",
        columns=fresh,
        message="requests held values the model never saw that are known ones spelt otherwise "
        f"(case or spaces), scored as unknown: {said}; categories match exactly: fix the "
        "client's spelling (each value is said once per process)",
    )
