"""``products.MemberProduct``: the members' linear layer, the same bits on any thread count."""

from __future__ import annotations

import pytest
import torch

from pipeline.products import MemberProduct


def _grads(threads: int, members: int, rows: int, width: int, out: int, plain: bool = False):
    """Output and gradients of one layer on fixed random inputs, on ``threads`` threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(rows * 7 + width)
        x = torch.randn(members, rows, width, generator=g, requires_grad=True)
        w = torch.randn(members, out, width, generator=g, requires_grad=True)
        b = torch.randn(members, out, generator=g, requires_grad=True)
        if plain:
            y = torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))
        else:
            y = MemberProduct.apply(x, w, b)
        y.backward(torch.randn(members, rows, out, generator=g))
        return [t.detach().clone() for t in (y, x.grad, w.grad, b.grad)]
    finally:
        torch.set_num_threads(before)


SHAPES = [  # (members, rows, inputs, outputs): each split by the BLAS library under baddbmm
    (1, 1024, 6, 256),  # one member: its weight gradient's sum over rows, at 2 threads
    (1, 1000, 20, 1),  # one member, one output: the forward product, at 3 threads
    (2, 1024, 256, 256),  # fewer members than threads: the weight gradient, at 3 and 4
    (4, 4096, 256, 256),  # at 8 threads
    (1, 1, 33, 256),  # a single row: the input gradient, at 2 threads
    (3, 517, 17, 9),  # three members, odd sizes
]


@pytest.mark.parametrize(("members", "rows", "width", "out"), SHAPES)
def test_the_layer_has_the_same_bits_on_1_to_8_threads(
    members: int, rows: int, width: int, out: int
) -> None:
    """Output, input gradient, weight gradient and bias gradient are equal, bit for bit, on 1,
    2, 3, 4 and 8 threads (baddbmm's own backward differed at each of these shapes)."""
    one = _grads(1, members, rows, width, out)
    for threads in (2, 3, 4, 8):
        got = _grads(threads, members, rows, width, out)
        names = ("output", "input grad", "weight grad", "bias grad")
        for name, a, b in zip(names, one, got, strict=True):
            assert torch.equal(a, b), (name, threads)


@pytest.mark.parametrize(("members", "rows", "width", "out"), SHAPES)
def test_the_layer_computes_baddbmm_and_its_gradients(
    members: int, rows: int, width: int, out: int
) -> None:
    """The chunked sums are the same products, up to float32 rounding."""
    ours, plain = _grads(2, members, rows, width, out), _grads(2, members, rows, width, out, True)
    for a, b in zip(ours, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-3)  # sums of up to 4,096 terms


def test_the_thread_count_is_restored() -> None:
    """The products cap the threads (one member, 3 threads) and give the setting back."""
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        x = torch.randn(1, 1024, 6, requires_grad=True)
        w = torch.randn(1, 256, 6, requires_grad=True)
        b = torch.randn(1, 256, requires_grad=True)
        MemberProduct.apply(x, w, b).sum().backward()
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(("members", "rows", "width", "out"), SHAPES)
def test_the_layer_gives_baddbmms_bits_where_each_member_has_a_thread(
    members: int, rows: int, width: int, out: int
) -> None:
    """On one thread (every member then runs whole on one), the products and gradients are
    baddbmm's own bits: ``member_product`` uses baddbmm itself when there are at least as many
    members as threads and this function otherwise, so the thread count cannot change them."""
    ours, plain = _grads(1, members, rows, width, out), _grads(1, members, rows, width, out, True)
    for a, b in zip(ours, plain, strict=True):
        assert torch.equal(a, b)
