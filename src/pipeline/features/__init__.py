"""Preprocessing: columns to tensors-ready arrays, with every statistic fitted on training rows.

numeric     -> optional log1p (long right tail) -> impute with the median -> clip to the
               training range -> robust scaling (median, interquartile range) -> smooth
               clipping x / sqrt(1 + (x/c)^2), so that no value lies beyond +-c (RealMLP's
               recipe, c = 1.5 by default: an outlier cannot drive the network into
               extrapolation), plus a 0/1
               missing indicator where training rows had gaps
categorical -> index into a vocabulary of values seen at least ``min_frequency`` times;
               0 is the unknown bucket (rare or unseen values), 1 is "missing"
boolean     -> a categorical with the values "false" / "true"

The fitted state is plain JSON (``Preprocessor.to_json``): nothing is pickled.

``categories`` holds the categorical vocabulary, ``numeric`` the numeric statistics and their
arithmetic, ``preprocessor`` the fitted transform and ``fit``; this module re-exports them.
"""

from __future__ import annotations

from pipeline.features.categories import (
    MISSING,
    UNKNOWN,
    as_categories,
    category_codes,
    category_counts,
    text_codes,
)
from pipeline.features.categories import _arrow_strings as _arrow_strings
from pipeline.features.columnwise import Consumed, RowsOf
from pipeline.features.numeric import (
    NumericState,
    NumericTable,
    as_numbers,
    numeric_values,
    smooth_clip,
    standardise,
)
from pipeline.features.preprocessor import (
    CategoricalState,
    Encoded,
    Preprocessor,
    TargetState,
    fit,
)

__all__ = [
    "MISSING",
    "UNKNOWN",
    "CategoricalState",
    "Consumed",
    "Encoded",
    "NumericState",
    "NumericTable",
    "Preprocessor",
    "RowsOf",
    "TargetState",
    "as_categories",
    "as_numbers",
    "category_codes",
    "category_counts",
    "fit",
    "numeric_values",
    "smooth_clip",
    "standardise",
    "text_codes",
]
