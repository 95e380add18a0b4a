"""The fused AdamW steps exactly as ``torch.optim.AdamW(fused=True)`` does, without its imports."""

from __future__ import annotations

import copy
import subprocess
import sys

import torch

from pipeline.adamw import FusedAdamW


def _net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Embedding(5, 3), torch.nn.Flatten(), torch.nn.Linear(6, 4), torch.nn.ReLU(),
        torch.nn.Linear(4, 1),
    )  # fmt: skip


def _steps(
    net: torch.nn.Module, opt: object, xs: list[torch.Tensor], ys: list[torch.Tensor]
) -> None:
    for x, y in zip(xs, ys, strict=True):
        opt.zero_grad(set_to_none=True)  # type: ignore[attr-defined]
        torch.nn.functional.mse_loss(net(x).squeeze(1), y).backward()
        opt.step()  # type: ignore[attr-defined]


def test_steps_and_state_are_bit_identical_to_torch_optim_fused_adamw() -> None:
    g = torch.Generator().manual_seed(0)
    xs = [torch.randint(0, 5, (8, 2), generator=g) for _ in range(12)]
    ys = [torch.randn(8, generator=g) * 100 for _ in range(12)]
    ours, theirs = _net(1), _net(1)
    opt = FusedAdamW(ours.parameters(), lr=3e-3, weight_decay=0.05)
    ref = torch.optim.AdamW(theirs.parameters(), lr=3e-3, weight_decay=0.05, fused=True)
    _steps(ours, opt, xs[:6], ys[:6])
    _steps(theirs, ref, xs[:6], ys[:6])
    # A checkpoint in the middle: state saved, a fresh optimiser restored from it, six more steps.
    saved = copy.deepcopy(opt.state_dict())
    ref_saved = ref.state_dict()
    assert saved["param_groups"] == ref_saved["param_groups"]
    for i, s in ref_saved["state"].items():
        assert set(saved["state"][i]) == set(s)
        for k, v in s.items():
            assert v.dtype == saved["state"][i][k].dtype and torch.equal(v, saved["state"][i][k])
    opt = FusedAdamW(ours.parameters(), lr=1.0, weight_decay=0.0)
    opt.load_state_dict(saved)
    _steps(ours, opt, xs[6:], ys[6:])
    _steps(theirs, ref, xs[6:], ys[6:])
    for a, b in zip(ours.state_dict().values(), theirs.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(ours.state_dict()["0.weight"], _net(1).state_dict()["0.weight"])


def test_training_does_not_import_the_compiler() -> None:
    """What the class is for: a training process spares torch._dynamo's 1 s import."""
    code = (
        "import sys, torch; from pipeline.adamw import FusedAdamW\n"
        "p = torch.nn.Parameter(torch.ones(3)); p.grad = torch.ones(3)\n"
        "FusedAdamW([p], 1e-3, 0.01).step()\n"
        "print('torch._dynamo' in sys.modules, 'sympy' in sys.modules, float(p[0]) < 1)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "True"]
