"""Categorical columns: canonical value texts, vocabulary counts and vocabulary codes.

Every value becomes one canonical string whatever dtype it was read as (``as_categories``); a
fitted vocabulary maps those strings to codes, position + 2, with ``UNKNOWN`` (0) for rare or
unseen values and ``MISSING`` (1). pyarrow-backed text columns are counted and coded with
pyarrow's kernels, without a Python string per cell.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from pipeline.data import cells

UNKNOWN, MISSING = 0, 1


def as_categories(series: pd.Series) -> np.ndarray:
    """Values as canonical strings (object array, None for missing), whatever dtype was read.

    The same value must map to the same string whether a file was read as int, float or text:
    ``3``, ``3.0`` and ``"3"`` all become ``"3"``; booleans become ``"true"`` / ``"false"``.
    """
    if isinstance(series.dtype, pd.CategoricalDtype):
        # Canonicalise each category once, then spread by code (-1 is missing).
        cats = as_categories(pd.Series(series.cat.categories))
        lookup = np.empty(len(cats) + 1, dtype=object)
        lookup[:-1] = cats  # lookup[-1] stays None: code -1
        out: np.ndarray = lookup[series.cat.codes.to_numpy()]
        return out
    missing = series.isna().to_numpy()
    if pd.api.types.is_bool_dtype(series):
        flags = series.fillna(False).to_numpy(dtype=bool)
        out = np.where(flags, cells.BOOLEAN_NAMES[True], cells.BOOLEAN_NAMES[False]).astype(object)
        out[missing] = None
        return out
    if pd.api.types.is_integer_dtype(series):
        out = series.astype("string").to_numpy(dtype=object, na_value=None)
        return out
    if pd.api.types.is_float_dtype(series):
        out = cells.float_category_texts(series.to_numpy(dtype="float64", na_value=np.nan))
        out[missing] = None
        return out
    if pd.api.types.is_string_dtype(series) and not pd.api.types.is_object_dtype(series):
        return series.to_numpy(dtype=object, na_value=None)
    # Mixed Python objects (e.g. JSON lines): one value at a time.
    values = series.to_numpy(dtype=object, na_value=None)
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = cells.category_text(v)
    return out


def _arrow_strings(series: pd.Series) -> Any:
    """The pyarrow array behind a pyarrow-backed text column (pandas' default), else None.

    Text columns read through pyarrow stay in Arrow memory; encoding them there with pyarrow's
    kernels avoids making a Python ``str`` object per cell (the slow part at a million rows).
    Such a column's values are already canonical (``as_categories`` returns them unchanged).
    """
    dtype = series.dtype
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
        import pyarrow as pa

        return pa.array(series.array)
    return None


def category_counts(series: pd.Series) -> list[tuple[str, int]]:
    """(canonical value, count) of every present value, in no particular order."""
    arr = _arrow_strings(series)
    if arr is not None:
        import pyarrow.compute as pc

        counted = pc.value_counts(arr.drop_null())
        values, counts = counted.field("values").to_pylist(), counted.field("counts").to_pylist()
        return list(zip(values, counts, strict=True))
    counts_ = pd.Series(as_categories(series)).value_counts(dropna=True)
    return [(v, int(c)) for v, c in counts_.items()]


def category_codes(series: pd.Series, vocab: tuple[str, ...]) -> tuple[np.ndarray, int]:
    """Codes into ``vocab`` (its position + 2; ``MISSING``; ``UNKNOWN`` for values not in it),
    and how many present values were unknown."""
    arr = _arrow_strings(series)
    if arr is not None:
        import pyarrow.compute as pc

        # null where the value is missing or not in the vocabulary.
        index = pc.index_in(arr, value_set=_vocab_array(vocab, arr.type))
        found = pc.fill_null(index, -1).to_numpy(zero_copy_only=False)
        absent = arr.is_null().to_numpy(zero_copy_only=False)
        # The codes computed in place (np.where's way made five arrays of the column's length).
        codes = found.astype(np.int64)
        codes += 2
        elsewhere = found < 0  # missing, or not in the vocabulary
        codes[elsewhere] = UNKNOWN
        codes[absent] = MISSING
        return codes, int(np.count_nonzero(elsewhere)) - int(np.count_nonzero(absent))
    else:
        values = as_categories(series)
        # -1 for anything not in the vocabulary, missing values included.
        found = _vocab_index(vocab).get_indexer(values).astype(np.int64)
        absent = pd.isna(values)
    codes = np.where(found >= 0, found + 2, np.where(absent, MISSING, UNKNOWN))
    return codes, int(((found < 0) & ~absent).sum())


# A package's vocabularies, as the lookup structures encoding needs, built once per process
# rather than once per call (a served request encodes a single row).
@functools.lru_cache(maxsize=4096)
def _vocab_index(vocab: tuple[str, ...]) -> pd.Index:
    index = pd.Index(list(vocab), dtype=object)
    index.get_indexer([])  # builds the hash table now, kept with the cached index
    return index


@functools.lru_cache(maxsize=4096)
def _vocab_array(vocab: tuple[str, ...], type_: Any) -> Any:
    import pyarrow as pa

    return pa.array(vocab, type=type_)


@functools.lru_cache(maxsize=4096)
def _vocab_lookup(vocab: tuple[str, ...]) -> dict[str, int]:
    return {value: i + 2 for i, value in enumerate(vocab)}


def text_codes(values: Sequence[str | None], vocab: tuple[str, ...]) -> tuple[np.ndarray, int]:
    """``category_codes`` of canonical texts (None for missing) given as a plain sequence."""
    lookup = _vocab_lookup(vocab)
    codes = np.fromiter(
        (MISSING if v is None else lookup.get(v, UNKNOWN) for v in values),
        dtype=np.int64,
        count=len(values),
    )
    return codes, int(np.count_nonzero(codes == UNKNOWN))
