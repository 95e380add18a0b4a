"""The ensemble's linear layers as one autograd function whose results have the same bits on
any number of torch threads.

``torch.baddbmm``'s own backward computes each member's weight gradient as one matrix product
over the batch's rows. When a batched product has fewer entries (members) than threads, MKL
splits an entry between threads and adds the partial sums in an order that follows their
number: with 4 members, 8 threads gave other weight gradients than 1; with 2 members, 3
threads did. One member is a plain matrix product for torch, and 2 threads already changed its
weight gradients (batch 256 and above), its outputs and its input gradients (measured on torch
2.13's MKL, ``tests/test_products.py``). Here the weight gradient's rows are cut into fixed
chunks of ``CHUNK_ROWS``, each chunk one entry of a batched product, the chunks' partial sums
are added in chunk order, and every product runs on at most as many threads as it has entries,
so that none is split.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

# Rows per chunk of the weight gradient: one entry of the batched product each. A constant, so
# that the sums do not depend on the machine; small enough that a batch of 1,024 rows and one
# member still gives 4 entries to share between threads (measured on 2 cores at batch 1024:
# chunks of 256 rows train as fast as baddbmm's own backward, chunks of 128 up to 1.2x slower).
CHUNK_ROWS = 256


class MemberProduct(torch.autograd.Function):
    """``bias + x @ weight^T`` for each member: x [k, B, in], weight [k, out, in], bias [k, out]
    -> [k, B, out]."""

    @staticmethod
    def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        with threads_at_most(len(x)):
            return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        x, weight, _ = inputs
        ctx.save_for_backward(x, weight)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        gx = None
        if ctx.needs_input_grad[0]:
            with threads_at_most(len(x)):
                gx = torch.bmm(grad, weight)
        gw, gb = chunked_gradients(x, grad)
        return gx, gw, gb


def chunked_gradients(x: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight gradient [k, out, in] and bias gradient [k, out] of the rows of ``x`` [k, B,
    in] given the output gradient ``grad`` [k, B, out], summed chunk by chunk in row order."""
    k, rows, width = x.shape
    out = grad.shape[2]
    n = -(-rows // CHUNK_ROWS)
    if n <= 1:  # one chunk per member
        with threads_at_most(k):
            # x^T @ grad, transposed: baddbmm's own product, so its bits at one chunk
            return torch.bmm(x.transpose(1, 2), grad).transpose(1, 2), grad.sum(dim=1)
    pad = n * CHUNK_ROWS - rows
    if pad:  # zero rows add exact zeros
        x = torch.nn.functional.pad(x, (0, 0, 0, pad))
        grad = torch.nn.functional.pad(grad, (0, 0, 0, pad))
    xs = x.reshape(k * n, CHUNK_ROWS, width)
    gs = grad.reshape(k * n, CHUNK_ROWS, out)
    with threads_at_most(k * n):
        partial = torch.bmm(xs.transpose(1, 2), gs).view(k, n, width, out).transpose(2, 3)
    sums = gs.view(k, n, CHUNK_ROWS, out).sum(dim=2)  # [k, n, out]: each chunk on its own
    gw, gb = partial[:, 0].clone(), sums[:, 0].clone()
    for i in range(1, n):  # element-wise, in chunk order
        gw += partial[:, i]
        gb += sums[:, i]
    return gw, gb


@contextmanager
def threads_at_most(entries: int) -> Iterator[None]:
    """torch's threads capped at ``entries`` for the block: a batched product of at least as
    many entries as threads runs each entry on one thread, where fewer entries than threads
    get split between them (and one entry is a plain matrix product, split along its sums)."""
    threads = torch.get_num_threads()
    if entries >= threads:
        yield
        return
    torch.set_num_threads(entries)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
