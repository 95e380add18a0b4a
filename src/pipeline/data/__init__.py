"""Datasets: fetch by URI (``sources``), read CSV/Parquet (``read``, typed columns made plain by
``columns``), parse cells (``cells``), tell formatted numbers and dates (``spellings``), refuse
guesses (``verdicts``), infer kinds (``schema``)."""
