"""Datasets: fetch by URI (``sources``), read CSV/Parquet (``read``), infer kinds (``schema``)."""
