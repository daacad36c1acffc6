"""The MAE learning-rate schedule: per-step linear warmup then half-cycle cosine."""

import pytest
import torch
from timm.scheduler import CosineLRScheduler
from torch import nn

from ssl_mae_plugin.schedules import warmup_cosine_lr, warmup_cosine_scheduler


def test_warmup_cosine_schedule_values():
    lr = [warmup_cosine_lr(e, 1.0, epochs=10, warmup_epochs=2, min_lr=0.1) for e in (0, 1, 2, 6)]
    assert lr == pytest.approx([0.0, 0.5, 1.0, 0.1 + 0.9 * 0.5])
    assert warmup_cosine_lr(10, 1.0, 10, 2, 0.1) == pytest.approx(0.1)

    params = [nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))]
    opt = torch.optim.SGD([{"params": [params[0]], "lr": 2.0}, {"params": [params[1]], "lr": 0.5}])
    sched = warmup_cosine_scheduler(opt, steps_per_epoch=4, epochs=3, warmup_epochs=1)
    seen = []
    for _ in range(12):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert seen[0] == [0.0, 0.0]  # first step at lr 0, as facebookresearch/mae
    assert seen[4] == pytest.approx([2.0, 0.5])  # end of warmup: each group at its peak
    assert seen[8] == pytest.approx([1.0, 0.25])  # half-way through the cosine


def test_the_schedule_equals_timms_where_their_semantics_coincide():
    # timm's cosine with a warmup prefix from 0 (min_lr 0: timm's floor is one absolute value
    # for every group, ours scales with each group's peak as facebookresearch/mae does).
    peak, steps, warmup = 0.4, 50, 10
    param = nn.Parameter(torch.ones(1))
    opt = torch.optim.SGD([param], lr=peak)
    timm_schedule = CosineLRScheduler(
        opt, t_initial=steps - warmup, warmup_t=warmup, warmup_lr_init=0.0, warmup_prefix=True
    )
    for step in range(steps + 1):
        expected = timm_schedule._get_lr(step)[0]
        assert warmup_cosine_lr(step, peak, steps, warmup) == pytest.approx(expected, abs=1e-12)
