"""Finding non-finite losses and gradients without making the host wait for the device.

Checking ``bool(torch.isfinite(loss))`` every step copies a value to the host, which makes
the CPU wait for the GPU instead of queueing the next step. :class:`NonFiniteWatch`
instead keeps, on the device, the first step whose loss or gradients were not finite, and
reads it only at the checking interval and before every checkpoint is written: a bad step
is found within that many steps, and no checkpoint after it ever reaches the disk.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

KINDS = ("loss", "gradients")
NONE = torch.iinfo(torch.int64).max  # "no bad step" in the reduction over ranks


class NonFiniteLossError(RuntimeError):
    """The loss or its gradients became NaN or infinite (training stops, checkpoints finite)."""


class NonFiniteWatch:
    """The first non-finite loss and gradient step, noted on the device.

    Call :meth:`start` when training starts, :meth:`note` with each step's loss or
    gradient norm, :meth:`advance` after each optimizer step, and :meth:`check` where the
    host may wait (the checking interval, before saving).
    """

    def __init__(self) -> None:
        self._step: Tensor | None = None
        self._first: dict[str, Tensor] = {}

    def start(self, device: torch.device, global_step: int) -> None:
        """Start counting at ``global_step`` on ``device`` (one copy to the device)."""
        self._step = torch.full((), global_step, dtype=torch.int64, device=device)
        self._first = {kind: torch.full_like(self._step, NONE) for kind in KINDS}

    def note(self, kind: str, value: Tensor) -> None:
        """Remember the current step if ``value`` holds a NaN or infinity (device ops only)."""
        if self._step is None:
            return
        bad = ~torch.isfinite(value.detach()).all()
        self._first[kind] = torch.where(
            bad, torch.minimum(self._first[kind], self._step), self._first[kind]
        )

    def advance(self) -> None:
        """Count one optimizer step (on the device)."""
        if self._step is not None:
            self._step.add_(1)

    def check(self, steps_per_epoch: int) -> None:
        """Read the first bad steps (of any rank) and stop if there is one.

        Raises:
            NonFiniteLossError: Naming the kind and the first bad step, its epoch and batch.
        """
        if self._step is None:
            return
        first = torch.stack([self._first[kind] for kind in KINDS])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(first, op=dist.ReduceOp.MIN)
        for kind, step in zip(KINDS, first.tolist(), strict=True):
            if step != NONE:
                epoch, batch = divmod(step, max(steps_per_epoch, 1))
                raise NonFiniteLossError(
                    f"non-finite {kind} at step {step} (epoch {epoch}, batch {batch}); "
                    "stopped, and no checkpoint after that step was written: the last one "
                    "is finite. Lower the learning rate or use precision 32"
                )
