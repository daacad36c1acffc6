"""What the benchmark scripts share: architectures, the machine, statistics, Markdown tables.

- ``ARCHS`` / ``arch_config``: the named architectures of ``throughput.py`` (and the default
  of ``end_to_end.py``) as a factory of ``ssl_mae_plugin.mae.MAE_FACTORIES`` plus overrides,
  resolved to a plain dict with the keys ``ARCH_KEYS``.
- ``machine_info``: ``ssl_mae_plugin.report.machine.machine_description()`` plus what a
  timing depends on (affinity, torch threads, ``OMP_NUM_THREADS``, load average).
- ``summarize``, ``median_or_none``: summary statistics of repeated measurements.
- ``markdown_table``, ``cell``, ``ratio``: Markdown tables of the results.
- ``command_line``, ``write_json``: the command that made a result, and writing it.

Nothing of ``ssl_mae_plugin`` is imported at module level: importing it before torch sets
``OMP_WAIT_POLICY`` (``end_to_end.py`` relies on that not happening); torch is imported here
first, and the package inside the functions that need it.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:  # the scripts run from anywhere, the package uninstalled
    sys.path.insert(0, str(REPO))

# ------------------------------------------------------------------------ architectures

# The fields of an architecture dict, as every implementation of the benchmarks takes them.
ARCH_KEYS = (
    "img_size",
    "patch_size",
    "embed_dim",
    "depth",
    "num_heads",
    "decoder_embed_dim",
    "decoder_depth",
    "decoder_num_heads",
    "mlp_ratio",
)
# Name: (factory of ``MAE_FACTORIES``, overrides of its defaults).
ARCHS: dict[str, tuple[str, dict[str, Any]]] = {
    # CPU-sized: 8x8 grid of 4x4 patches, 17 encoder tokens, 65 decoder tokens; a narrower,
    # shallower ViT-Tiny (128-d, 4 blocks, 4 heads) with a 64-d, 2-block, 4-head decoder.
    "small": (
        "vit_tiny",
        {
            "img_size": 32,
            "patch_size": 4,
            "embed_dim": 128,
            "depth": 4,
            "num_heads": 4,
            "decoder_embed_dim": 64,
            "decoder_depth": 2,
            "decoder_num_heads": 4,
        },
    ),
    # The CIFAR recipe's model: ViT-Tiny/4 at 32 with our 256-d, 4-block tiny decoder.
    "tiny32": ("vit_tiny", {"img_size": 32, "patch_size": 4}),
    # The paper's ViT-B/16 and ViT-L/16 MAE at 224 (512-d, 8-block decoder).
    "vit_base": ("vit_base", {}),
    "vit_large": ("vit_large", {}),
}


def arch_config(name: str) -> dict[str, Any]:
    """The architecture ``name`` of ``ARCHS`` as a dict with the keys ``ARCH_KEYS``.

    The values are the factory's ``MAE.config`` (built on the meta device: no weights are
    allocated); a square ``img_size`` is one int. The mask ratio and the loss are settings of
    a run, not of the architecture; the input has 3 channels.
    """
    from ssl_mae_plugin.mae import MAE_FACTORIES

    factory, overrides = ARCHS[name]
    with torch.device("meta"):
        config = MAE_FACTORIES[factory](**overrides).config
    if config["in_chans"] != 3:
        raise ValueError(f"{name}: the benchmarks feed RGB images, in_chans={config['in_chans']}")
    arch = {key: config[key] for key in ARCH_KEYS}
    height, width = arch["img_size"]
    arch["img_size"] = height if height == width else [height, width]
    return arch


# ------------------------------------------------------------------------------ machine


def package_versions(packages: Iterable[str]) -> dict[str, str | None]:
    """Installed versions (``None``: not installed) of distribution packages."""
    versions: dict[str, str | None] = {}
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def nvidia_driver() -> str | None:
    """The NVIDIA driver version from ``nvidia-smi`` (``None`` without one)."""
    if not shutil.which("nvidia-smi"):
        return None
    query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
    try:
        done = subprocess.run(query, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = done.stdout.strip().splitlines()
    return lines[0].strip() if lines else None


def machine_info(packages: Sequence[str] = (), driver: bool = False) -> dict[str, Any]:
    """The package's ``machine_description()`` plus the benchmark-only fields.

    Added: ``affinity_cores`` (cores this process may run on), ``torch_threads``,
    ``OMP_NUM_THREADS``, ``loadavg_start`` (1, 5 and 15 minutes), the versions of
    ``packages`` in ``libraries`` next to the package's list, and with ``driver`` the
    ``gpu_driver`` that ``nvidia-smi`` reports. Call it before the measurements.
    """
    from ssl_mae_plugin.report.machine import machine_description

    info = machine_description()
    info["libraries"].update(package_versions(packages))
    info.update(
        affinity_cores=len(os.sched_getaffinity(0)),
        torch_threads=torch.get_num_threads(),
        OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS"),
        loadavg_start=os.getloadavg(),
    )
    if driver:
        info["gpu_driver"] = nvidia_driver()
    return info


# --------------------------------------------------------------------------- statistics


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Median, min, max and quartiles (q1 = min, q3 = max below 4 values)."""
    ordered = sorted(values)
    if len(ordered) >= 4:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1, q3 = ordered[0], ordered[-1]
    return {
        "median": statistics.median(ordered),
        "min": ordered[0],
        "max": ordered[-1],
        "q1": q1,
        "q3": q3,
    }


def median_or_none(values: Iterable[float | None]) -> float | None:
    """The median of the values that are not ``None``; ``None`` when there are none."""
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


# ------------------------------------------------------------------------------- output


def cell(value: float | None, spec: str) -> str:
    """``value`` formatted with ``spec`` for a table; a dash for ``None``."""
    return "–" if value is None else format(value, spec)


def ratio(numerator: float | None, denominator: float | None) -> str:
    """``numerator / denominator`` as ``1.23x``; a dash when either is missing or zero."""
    return f"{numerator / denominator:.2f}x" if numerator and denominator else "–"


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[str]], left: int = 1) -> str:
    """A Markdown table: the first ``left`` columns left-aligned, the rest right-aligned.

    A row shorter than ``columns`` is padded with empty cells.
    """

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    align = ["---" if index < left else "---:" for index in range(len(columns))]
    lines = [line(columns), "|" + "|".join(align) + "|"]
    for row in rows:
        if len(row) > len(columns):
            raise ValueError(f"{len(row)} cells for {len(columns)} columns: {row}")
        lines.append(line([*row, *[""] * (len(columns) - len(row))]))
    return "\n".join(lines)


def command_line() -> str:
    """The command that runs this process, as it was typed (the interpreter by name)."""
    return " ".join([Path(sys.executable).name, *sys.argv])


def write_json(path: str | Path, data: Any) -> Path:
    """``data`` as indented JSON at ``path`` (its folder made); the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
