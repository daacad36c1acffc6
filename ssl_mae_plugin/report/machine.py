"""Where a run or a benchmark happened: CPU, GPU, library versions."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

LIBRARIES = ("torch", "torchvision", "lightly", "timm", "pytorch-lightning", "transformers")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what ``platform`` knows)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries that decide speed and results."""
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def machine_description() -> dict[str, Any]:
    """CPU model and cores, GPUs, Python, platform and library versions."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "gpu": gpu,
        "gpu_count": torch.cuda.device_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": library_versions(),
    }


def describe_machine(machine: dict[str, Any]) -> str:
    """One line for a report: ``CPU (N cores), G x GPU, torch V``."""
    text = f"{machine['cpu']} ({machine['cpu_cores']} cores)"
    if machine.get("gpu"):
        text += f", {machine['gpu_count']} x {machine['gpu']}"
    return f"{text}, torch {machine['torch']}"
