"""The performance paths give the same answers as the plain ones they replace."""

from __future__ import annotations

import threading
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from pipeline import features, fit
from pipeline.data.schema import Column, Schema
from pipeline.errors import DataError
from pipeline.model import FoldedNetwork, ModelConfig, TabularMLP
from pipeline.predict.readers import prefetched
from pipeline.settings import FeatureSettings

WORDS = st.sampled_from(["red", "blue", "green", "", "3", "3.0", "Ünïcode", "a,b"])


@hsettings(max_examples=60, deadline=None)
@given(values=st.lists(st.one_of(st.none(), WORDS), max_size=40), vocab=st.lists(WORDS))
def test_arrow_text_columns_encode_exactly_as_python_strings(
    values: list[str | None], vocab: list[str]
) -> None:
    """Codes, unknown counts and value counts of a pyarrow-backed column match the object path."""
    vocab_t = tuple(dict.fromkeys(vocab))
    arrow = pd.Series(values, dtype="str")  # pandas' default text dtype: pyarrow storage
    python = pd.Series(values, dtype=object)
    assert features._arrow_strings(arrow) is not None
    assert features._arrow_strings(python) is None
    codes_a, unseen_a = features.category_codes(arrow, vocab_t)
    codes_p, unseen_p = features.category_codes(python, vocab_t)
    assert codes_a.tolist() == codes_p.tolist() and unseen_a == unseen_p
    assert sorted(features.category_counts(arrow)) == sorted(features.category_counts(python))


def test_a_pandas_categorical_column_spells_values_as_its_categories_do() -> None:
    """A dictionary column read from Parquet (pandas 'category') canonicalises like plain values."""
    values = [3.0, None, 1.5, 3.0, 7.0]
    as_category = pd.Series(values).astype("category")
    assert features.as_categories(as_category).tolist() == ["3", None, "1.5", "3", "7"]
    assert (
        features.as_categories(as_category).tolist()
        == features.as_categories(pd.Series(values)).tolist()
    )


def test_transform_writes_the_same_arrays_as_stacking_float64_columns() -> None:
    """Column-staged float32 output is bit-identical to stacking float64 columns and casting."""
    rng = np.random.default_rng(0)
    n = 40_000  # more than one staging block of rows
    frame = pd.DataFrame(
        {f"x{j}": np.where(rng.random(n) < 0.1, np.nan, rng.lognormal(size=n)) for j in range(5)}
        | {"c": pd.Series(rng.choice(["a", "b", "c", None], n), dtype="str"), "y": rng.random(n)}
    )
    schema = Schema(
        (*(Column(f"x{j}", "numeric") for j in range(5)), Column("c", "categorical")),
        "y",
        "regression",
        "none",
        (),
    )
    pre = features.fit(frame, schema, FeatureSettings(), "t")
    assert any(s.log for s in pre.numeric) and all(s.indicator for s in pre.numeric)
    enc = pre.transform(frame, "t", with_target=True)
    # The plain recipe: every column in float64, stacked, cast once.
    cols, masks = [], []
    for s in pre.numeric:
        x = frame[s.name].to_numpy()
        missing = np.isnan(x)
        x = np.log1p(np.maximum(x, 0.0)) if s.log else x
        z = (np.clip(np.where(missing, s.fill, x), s.low, s.high) - s.center) / s.scale
        cols.append(z / np.hypot(1.0, z / s.smooth_clip))
        masks.append(missing.astype("float64"))
    expected = np.stack(cols + masks, axis=1).astype(np.float32)
    assert enc.numeric.dtype == np.float32 and np.array_equal(enc.numeric, expected)


@pytest.mark.parametrize(
    ("cards", "hidden", "n_numeric", "members"),
    [
        ((7, 4, 30, 4, 120, 3), (64, 32), 5, 1),
        ((7, 4, 30, 4, 120, 3), (64, 32), 5, 4),
        ((), (16,), 3, 3),
        ((5, 9), (), 0, 2),
    ],
)
def test_folded_network_matches_the_module(
    cards: tuple[int, ...], hidden: tuple[int, ...], n_numeric: int, members: int
) -> None:
    """Embeddings folded into the first layer give the module's outputs to float32 rounding,
    for a single network and for an ensemble (each member folded with its own tables)."""
    dims = tuple(min(6, c) for c in cards)  # several widths: several embedding groups
    cfg = ModelConfig(n_numeric, cards, dims, hidden, 0.1, 2, members)
    model = TabularMLP(cfg, torch.Generator().manual_seed(1)).eval()
    gen = torch.Generator().manual_seed(2)
    n = 2500  # over two spans of SPAN_ROWS and a partial one, for the threaded pass
    numeric = torch.randn((n, n_numeric), generator=gen)
    categorical = torch.stack(
        [torch.randint(0, c, (n,), generator=gen) for c in cards], dim=1
    ) if cards else torch.zeros((n, 0), dtype=torch.long)  # fmt: skip
    expected = fit.forward_all(model, numeric, categorical)
    got = FoldedNetwork(model)(numeric, categorical)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5)
    # Each row's output is independent of the batch it is in (chunked runs stay identical).
    halves = torch.cat([FoldedNetwork(model)(numeric[:300], categorical[:300]),
                        FoldedNetwork(model)(numeric[300:], categorical[300:])])  # fmt: skip
    assert torch.equal(halves, got)
    # Spans of blocks scored in threads (`pipeline predict`) give the serial pass's bytes.
    threaded, names = FoldedNetwork(model), set()
    threaded.threads = 3
    block = threaded._block

    def named(*args: object) -> torch.Tensor:
        names.add(threading.current_thread().name.rsplit("_", 1)[0])
        return block(*args)  # type: ignore[arg-type]

    threaded._block = named  # type: ignore[method-assign]
    assert torch.equal(threaded(numeric, categorical), got)
    assert names == {"forward"}  # the pool's threads did the work


def test_read_ahead_keeps_order_and_raises_where_the_reader_failed() -> None:
    """Chunks come through in order; a reader's error reaches the caller after the good chunks."""

    def chunks() -> object:
        for k in range(5):
            yield pd.DataFrame({"k": [k]})
        raise DataError("row 6 is bad")

    seen = []
    with pytest.raises(DataError, match="row 6 is bad"):
        for chunk in prefetched(chunks()):  # type: ignore[arg-type]
            seen.append(int(chunk["k"].iloc[0]))
    assert seen == [0, 1, 2, 3, 4]


def test_read_ahead_closes_the_reader_when_the_caller_stops_early() -> None:
    """Stopping after one chunk closes the source generator instead of reading the whole file."""
    closed = []

    def chunks() -> object:
        try:
            for k in range(1000):
                yield pd.DataFrame({"k": [k]})
        finally:
            closed.append(True)

    reader = prefetched(chunks())  # type: ignore[arg-type]
    assert int(next(reader)["k"].iloc[0]) == 0
    reader.close()
    for _ in range(100):  # the thread notices within its 0.1 s put timeout
        if closed:
            break
        time.sleep(0.05)
    assert closed == [True]


def test_read_ahead_has_finished_its_chunk_when_the_caller_stops() -> None:
    """A caller that stops (a bad cell in chunk k, a SIGTERM) while the thread reads chunk k+1
    returns only once that read is over: a process that exited while the thread was inside
    Arrow (``to_pandas``) hung in Arrow's thread-pool shutdown, 6 runs in 30 of a predict
    that stopped on a bad cell."""
    import threading

    reading = threading.Event()

    def chunks() -> object:
        yield pd.DataFrame({"k": [0]})
        reading.set()
        time.sleep(0.5)  # the next chunk's read, under way when the caller stops
        yield pd.DataFrame({"k": [1]})

    reader = prefetched(chunks())  # type: ignore[arg-type]
    assert int(next(reader)["k"].iloc[0]) == 0
    assert reading.wait(5)
    reader.close()
    alive = [t.name for t in threading.enumerate() if t.name == "predict-read-ahead"]
    assert alive == []


def test_arrow_array_of_a_chunked_text_column_is_one_array() -> None:
    """A frame converted from a multi-chunk table still encodes through the Arrow path."""
    table = pa.Table.from_batches(
        [pa.record_batch({"c": pa.array(["a", None])}), pa.record_batch({"c": pa.array(["b"])})]
    )
    series = table.to_pandas()["c"]
    codes, unseen = features.category_codes(series, ("b",))
    assert codes.tolist() == [features.UNKNOWN, features.MISSING, 2] and unseen == 1


@pytest.mark.parametrize("members", [1, 4])
def test_every_row_has_the_same_output_bytes_however_it_is_batched(members: int) -> None:
    """Random batch sizes, shuffled row orders and chunk sizes: each row's output is the same
    bytes every time, through predict's folded network and through the module (evaluation).
    Without fixed blocks, chunks of 99 changed the last bits of 25 rows in 1,459."""
    cards = (5, 8, 4, 25, 6, 10, 3, 7) * 3
    cfg = ModelConfig(30, cards, tuple(min(8, c) for c in cards), (64, 32), 0.1, 1, members)
    model = TabularMLP(cfg, torch.Generator().manual_seed(1)).eval()
    gen = torch.Generator().manual_seed(2)
    n = 1459
    numeric = torch.randn((n, 30), generator=gen)
    categorical = torch.stack([torch.randint(0, c, (n,), generator=gen) for c in cards], dim=1)
    folded = FoldedNetwork(model)
    for forward in (folded, lambda x, c: fit.forward_all(model, x, c)):
        whole = forward(numeric, categorical)
        rng = np.random.default_rng(3)
        for _ in range(6):
            order = torch.from_numpy(rng.permutation(n))
            cuts = np.sort(
                rng.choice(np.arange(1, n), size=int(rng.integers(1, 40)), replace=False)
            )
            parts = [forward(numeric[idx], categorical[idx])
                     for idx in np.split(order.numpy(), cuts)]  # fmt: skip
            got = torch.empty_like(whole)
            got[order] = torch.cat(parts)
            assert torch.equal(got, whole)
        for chunk in (1, 8, 63, 65, 97, 99, 128, 129):
            chunks = [forward(numeric[i : i + chunk], categorical[i : i + chunk])
                      for i in range(0, n, chunk)]  # fmt: skip
            assert torch.equal(torch.cat(chunks), whole)
