"""LARS as the SSL reference code has it: SimCLR's, BYOL's, MoCo v3's and MAE's probe.

The trust ratio ``eta * ||w|| / ||g + wd * w||`` and weight decay apply to weight matrices
only (``ndim > 1``); biases and normalisation scales get plain momentum SGD. All on the
device: no value is read by the host, so a step never waits for the GPU (unlike
``lightly.utils.lars.LARS``, which branches on its norms in Python).

- [0]: Masked Autoencoders Are Scalable Vision Learners, 2021, https://arxiv.org/abs/2111.06377
- [1]: Large Batch Training of Convolutional Networks (LARS), 2017, https://arxiv.org/abs/1708.03888
- [2]: An Empirical Study of Training Self-Supervised Vision Transformers (MoCo v3), 2021,
  https://arxiv.org/abs/2104.02057
- [3]: google-research/simclr, lars_optimizer.py, https://github.com/google-research/simclr
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch


class LARS(torch.optim.Optimizer):
    """SGD with momentum and a layer-wise trust ratio, for parameters with ``ndim > 1`` only.

    For a parameter ``p`` with ``p.ndim > 1`` (a weight matrix) the step is::

        g = grad + weight_decay * p
        g = g * (trust_coefficient * ||p|| / ||g||)   # 1 when either norm is 0
        mu = momentum * mu + g
        p = p - lr * mu

    Parameters with ``ndim <= 1`` (biases, normalisation scales), and the groups with
    ``"lars_adaptation": False``, get neither weight decay nor the trust ratio: plain SGD
    with momentum [3]. Unlike ``lightly.utils.lars.LARS``, the trust ratio is applied even
    when ``weight_decay == 0``, which is how the MAE linear probe uses it (wd 0, lr = 0.1 *
    batch / 256) [0, 2].

    Args:
        params: Parameters or parameter groups.
        lr: Learning rate.
        weight_decay: L2 penalty added to the gradient of ``ndim > 1`` parameters.
        momentum: Momentum factor (the buffer is not dampened).
        trust_coefficient: The LARS coefficient ``eta`` [1].
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.0,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        trust_coefficient: float = 0.001,
    ) -> None:
        if lr < 0.0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if weight_decay < 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        defaults = {
            "lr": lr,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "trust_coefficient": trust_coefficient,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Take one optimisation step; ``closure`` re-evaluates the loss if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad
                if p.ndim > 1 and group.get("lars_adaptation", True):
                    update = update.add(p, alpha=group["weight_decay"])
                    param_norm = torch.linalg.vector_norm(p)
                    update_norm = torch.linalg.vector_norm(update)
                    ratio = group["trust_coefficient"] * param_norm / update_norm
                    ones = torch.ones_like(param_norm)
                    ratio = torch.where(
                        (param_norm > 0) & (update_norm > 0), ratio, ones
                    )  # no scaling for a zero weight or a zero update
                    update = update.mul(ratio)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(group["momentum"]).add_(update)
                p.add_(mu, alpha=-group["lr"])
        return loss
