"""The ensemble's linear layers as one autograd function whose results have the same bits on
any number of torch threads.

Each member's weight gradient is a matrix product summed over the batch's rows. When a batched
product has fewer entries (members) than threads, MKL splits an entry between threads and adds
the partial sums in an order that follows their number: with 4 members, 8 threads gave other
weight gradients than 1; with 2 members, 3 threads did. One member is a plain matrix product
for torch, and 2 threads already changed its weight gradients (batch 256 and above), its
outputs and its input gradients (measured on torch 2.13's MKL, ``tests/test_products.py``).
With at least as many entries as threads, each entry runs whole on one thread and no thread
count changed a bit. So every product here runs on at most as many threads as members, with
``baddbmm``'s own arithmetic (the same bits, ``tests/test_products.py``); ``MemberLinear`` uses
(``member_product``) only when there are more threads than members, so the default ensemble
of 4 on up to 4 threads (the most ``runtime`` chooses) runs ``baddbmm`` itself, and one member
on 2 threads runs its products on one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


def member_product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``bias + x @ weight^T`` for each member (x [k, B, in], weight [k, out, in], bias [k, out]):
    ``baddbmm`` itself while every member has a thread to itself, else ``MemberProduct`` (the
    same bits, on at most one thread per member)."""
    if len(x) >= torch.get_num_threads():
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))
    out: torch.Tensor = MemberProduct.apply(x, weight, bias)  # type: ignore[no-untyped-call]
    return out


class MemberProduct(torch.autograd.Function):
    """``bias + x @ weight^T`` for each member: x [k, B, in], weight [k, out, in], bias [k, out]
    -> [k, B, out], with ``baddbmm``'s products and gradients, on at most k threads."""

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
        with threads_at_most(len(x)):
            gx = torch.bmm(grad, weight) if ctx.needs_input_grad[0] else None
            # x^T @ grad, transposed: the product baddbmm's own backward computes
            gw = torch.bmm(x.transpose(1, 2), grad).transpose(1, 2)
            gb = grad.sum(dim=1)  # k x out sums: each whole on one thread
        return gx, gw, gb


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
