"""The training step queues work without waiting for the device: no host reads per step.

A read of a tensor's value (``item``, ``bool``, ``float``, ``int``, ``tolist``, ``cpu``) makes
the host wait for the device. The loader's own reads are of host tensors (in loader
workers on a GPU run) and are not counted: only reads from the training step, the method,
Lightning's loop, the callbacks and the optimizer.
"""

import sys

import pytest
import torch
from pytorch_lightning.callbacks import Callback

from ssl_mae_plugin.evaluation.protocols import prepare_data
from ssl_mae_plugin.pretrain import pretrain
from ssl_mae_plugin.recipe_loading import recipe_from_dict
from tests.conftest import TINY_VIT, tiny_recipe
from tests.methods.test_recipes import HEADS

READS = ("item", "__bool__", "__float__", "__int__", "tolist", "cpu")
LOADER = ("torch/utils/data", "torchvision/", "lightly/transforms", "lightly/data", "PIL/",
          "pretrain/sampling.py", "ssl_mae_plugin/data.py")  # fmt: skip
INTERVAL = 4  # trainer.log_every_n_steps: logging and the non-finite check read then
CASES = {  # every optimizer (AdamW, LARS, SGD), the EMA teachers and DINO's centre
    "mae-adamw": {"name": "mae", **TINY_VIT, **HEADS["mae"]},
    "simclr-lars": {"name": "simclr", "backbone": "resnet18", **HEADS["simclr"]},
    "byol-ema": {"name": "byol", **TINY_VIT, **HEADS["byol"]},
    "dino-sgd-centre": {"name": "dino", "backbone": "resnet18", **HEADS["dino"]},
    "mocov3-ema": {"name": "mocov3", **TINY_VIT, **HEADS["mocov3"]},
    "mae-device-decode": {"name": "mae", **TINY_VIT, **HEADS["mae"]},
    "vicreg-lars": {"name": "vicreg", "backbone": "resnet18", **HEADS["vicreg"]},
}


def from_the_loader() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        if any(part in frame.f_code.co_filename for part in LOADER):
            return True
        frame = frame.f_back
    return False


class StepReads(Callback):
    """Counted reads from the start of one training step to the start of the next."""

    def __init__(self, counter: list[int]) -> None:
        self.counter = counter
        self.steps: list[tuple[int, int]] = []  # (global step at the start, reads)
        self._mark: tuple[int, int] | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._close()
        self._mark = (trainer.global_step, self.counter[0])

    def on_train_epoch_end(self, trainer, pl_module):
        self._close()

    def _close(self):
        if self._mark is not None:
            step, start = self._mark
            self.steps.append((step, self.counter[0] - start))
            self._mark = None


@pytest.mark.parametrize("case", list(CASES))
def test_no_host_reads_between_logging_and_check_intervals(
    cifar_folder, tmp_path, monkeypatch, case
):
    entry = CASES[case]
    raw = tiny_recipe(
        cifar_folder, tmp_path, methods=[entry], pretrain={"epochs": 2, "batch_size": 16}
    )
    raw["trainer"]["log_every_n_steps"] = INTERVAL
    raw["data"]["image_size"] = 16 if entry["backbone"] == "resnet18" else 32
    raw["data"]["max_train_images"] = 96  # 6 steps an epoch: quiet steps between intervals
    if case.endswith("device-decode"):  # the batch decoded and cropped in the main process
        raw["data"]["decode"] = "device"
    recipe = recipe_from_dict(raw)
    data = prepare_data(recipe)
    counter = [0]
    for name in READS:
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, **kwargs):
            if not from_the_loader():
                counter[0] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    reads = StepReads(counter)
    pretrain(recipe, 0, data.train, callbacks=[reads])
    steps_per_epoch = len(data.train) // 16
    assert len(reads.steps) == 2 * steps_per_epoch
    quiet = [  # neither a logging/check step nor the last of an epoch
        (step, count)
        for step, count in reads.steps
        if (step + 1) % INTERVAL and (step + 1) % steps_per_epoch
    ]
    assert len(quiet) >= steps_per_epoch
    assert [count for _, count in quiet] == [0] * len(quiet), quiet
    assert any(count for _, count in reads.steps)  # the interval steps do read
