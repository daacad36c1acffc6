"""What the methods with an EMA teacher share (BYOL, DINO, MoCo v3).

The teacher (``teacher_backbone``, ``teacher_projection_head``) starts as a copy of the
student, never requires gradients (so it is in no optimizer group) and is moved towards
the student before every training step, with a momentum that follows a cosine from
``momentum_start`` to ``momentum_end`` over the run.

- [0]: Bootstrap Your Own Latent, 2020, https://arxiv.org/abs/2006.07733
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import nn

from ssl_mae_plugin.methods.base import SSLMethod


class TeacherStudentMethod(SSLMethod):
    """Base of the methods whose targets come from an EMA teacher.

    Subclasses build ``backbone`` and ``projection_head``, then call :meth:`init_teacher`.

    Args:
        momentum_start: Teacher EMA momentum at the first step.
        momentum_end: Teacher EMA momentum at the last step.
        **common: :class:`SSLMethod` arguments.
    """

    def __init__(self, momentum_start: float, momentum_end: float, **common: Any) -> None:
        super().__init__(**common)
        self.momentum_start = momentum_start
        self.momentum_end = momentum_end

    def init_teacher(
        self,
        teacher_projection_head: nn.Module | None = None,
        teacher_backbone: nn.Module | None = None,
    ) -> None:
        """Make a frozen teacher with the student's weights.

        The student's networks are deep-copied unless given ready-made (a head that cannot
        be copied, a backbone built without stochastic depth); given ones receive the
        student's weights.
        """
        pairs = {
            "teacher_backbone": (self.backbone, teacher_backbone),
            "teacher_projection_head": (self.projection_head, teacher_projection_head),
        }
        for name, (student, teacher) in pairs.items():
            if teacher is None:
                teacher = copy.deepcopy(student)
            else:
                teacher.load_state_dict(student.state_dict())
            setattr(self, name, teacher)
        deactivate_requires_grad(self.teacher_backbone)
        deactivate_requires_grad(self.teacher_projection_head)

    def teacher_momentum(self) -> float:
        """EMA momentum of the current step: cosine from ``momentum_start`` to ``momentum_end``."""
        return cosine_schedule(
            step=self.global_step,
            max_steps=int(self.trainer.estimated_stepping_batches),
            start_value=self.momentum_start,
            end_value=self.momentum_end,
        )

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """``teacher = momentum * teacher + (1 - momentum) * student``, parameter-wise."""
        update_momentum(self.backbone, self.teacher_backbone, m=momentum)
        update_momentum(self.projection_head, self.teacher_projection_head, m=momentum)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Move the teacher towards the student before each step [0]."""
        self.update_teacher(self.teacher_momentum())
