"""Datasets: fetch by URI (``sources``), read CSV/Parquet (``read``), parse cells (``cells``),
infer kinds (``schema``)."""
