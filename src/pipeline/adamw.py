"""AdamW as one fused kernel call, without ``torch.optim``'s import of the compiler.

``torch.optim.AdamW(fused=True)`` runs ``torch._fused_adamw_``: one kernel for every parameter.
But any ``torch.optim`` optimiser imports ``torch._dynamo`` (and sympy) when it is built, to wrap
its methods for ``torch.compile``: 1.1 s of every ``pipeline train`` process that never compiles.
This class makes the same kernel call with the same arguments, so its steps are bit-identical to
``torch.optim.AdamW(params, lr, weight_decay=..., fused=True)`` (``tests/test_adamw.py`` checks
it), and its ``state_dict`` has the same layout.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

BETAS = (0.9, 0.999)
EPS = 1e-8


class FusedAdamW:
    """Decoupled-weight-decay Adam over ``params``, every step one ``torch._fused_adamw_``."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float):
        self.params = list(params)
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        # Per parameter, created at its first gradient as torch.optim does: the step count (a
        # float32 scalar, as the fused kernel reads it) and the two moment estimates.
        self.state: dict[int, dict[str, torch.Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients (``set_to_none=False`` zeroes them in place instead)."""
        for p in self.params:
            if p.grad is not None:
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        live = [(i, p) for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        for i, p in live:
            if i not in self.state:
                self.state[i] = {
                    "step": torch.zeros((), dtype=torch.float32, device=p.device),
                    "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                }
        states = [self.state[i] for i, _ in live]
        steps = [s["step"] for s in states]
        torch._foreach_add_(steps, 1)
        torch._fused_adamw_(
            [p for _, p in live],
            [p.grad for _, p in live],  # type: ignore[misc]
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [],
            steps,
            amsgrad=False,
            lr=self.lr,
            beta1=BETAS[0],
            beta2=BETAS[1],
            weight_decay=self.weight_decay,
            eps=EPS,
            maximize=False,
            grad_scale=None,
            found_inf=None,
        )

    def state_dict(self) -> dict[str, Any]:
        """The moments and step counts (live tensors, as torch.optim hands them out), and the
        hyperparameters, laid out as ``torch.optim.AdamW.state_dict()`` lays them out."""
        group = {
            "lr": self.lr,
            "betas": BETAS,
            "eps": EPS,
            "weight_decay": self.weight_decay,
            "amsgrad": False,
            "maximize": False,
            "foreach": None,
            "capturable": False,
            "differentiable": False,
            "fused": True,
            "decoupled_weight_decay": True,
            "params": list(range(len(self.params))),
        }
        return {"state": dict(self.state), "param_groups": [group]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state_dict()``'s output (tensors copied, on each parameter's device)."""
        (group,) = state["param_groups"]
        if len(group["params"]) != len(self.params):
            raise ValueError(
                f"the optimiser state is for {len(group['params'])} parameters, "
                f"this network has {len(self.params)}"
            )
        self.lr, self.weight_decay = float(group["lr"]), float(group["weight_decay"])
        self.state = {
            int(i): {k: v.detach().clone().to(self.params[int(i)].device) for k, v in s.items()}
            for i, s in state["state"].items()
        }
