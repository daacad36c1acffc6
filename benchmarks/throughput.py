"""MAE pretraining throughput: ours vs lightly's MAE modules vs transformers' ViTMAE.

One training step is forward + backward + AdamW step on a fixed batch of random images
(data loading is not measured). The three implementations share the architecture (encoder
and decoder widths, depths, heads, MLP ratio, patch and image size), mask ratio 0.75, the
norm-pix loss, the batch, the precision and the optimizer (AdamW, betas 0.9/0.95, wd 0.05,
every trainable parameter in one group):

- ``ours``: ``ssl_mae_plugin.MAE.training_loss`` (the training entry point: pixel head and
  loss on the removed patches only); ``ours_forward`` is ``MAE.forward(...).loss`` (the full
  ``pred`` API), kept to show what the training entry point saves.
- ``lightly``: ``MaskedVisionTransformerTIMM`` + ``MaskedVisionTransformerDecoderTIMM`` with
  a linear decoder embedding and pixel head, wired as lightly's ``benchmarks/imagenet/
  vitb16/mae.py`` (``random_token_mask``, ``repeat_token`` + ``set_at_index`` for the
  decoder input, ``get_at_index`` for the removed tokens and their target patches,
  ``patchify``), plus the per-patch norm-pix target (unbiased variance + 1e-6) as ours.
- ``hf``: ``transformers.ViTMAEForPreTraining`` (``norm_pix_loss=True``, LayerNorm eps
  1e-6, exact GELU, SDPA attention).

Each config (device x precision x eager/compile) builds every implementation, warms it up
(the first compiled steps compile), then times ``--steps`` steps per repeat, interleaving
the implementations (A B C A B C ...). Reported: median images/s (wall clock) with
min/max and IQR over the repeats; on the CPU also images per CPU-second of the process
(``time.process_time``), which, unlike the wall clock, does not count time the process
waited for a core on a shared machine; and peak memory:

- CUDA: measured in-process. ``resident`` (parameters, buffers, AdamW state and the
  gradients left by the previous step, of that implementation) + the largest growth of
  ``torch.cuda.max_memory_allocated`` over a timed block above what was allocated when it
  began (activations and temporaries); the other implementations' memory cancels out.
- CPU: a fresh subprocess per (implementation, precision, mode) builds the model and runs
  3 steps; the number is the peak resident set size (``VmHWM``) minus the RSS just before
  the model was built (so: parameters, gradients, AdamW state, activations and allocator
  overhead; not the Python/torch import footprint, not the input batch).

Model FLOPs per image follow the official ``models_mae.py`` algorithm (patch embedding of
all L patches, encoder on the cls + visible tokens, decoder on cls + L tokens, pixel head
on L tokens); matmul FLOPs only (2 per multiply-add); train = 3 x forward. MFU on CUDA =
images/s x train FLOPs per image / ``--peak-tflops`` (default from the GPU name: dense
bf16 for bf16 runs; for fp32 runs plain fp32, or TF32 with ``--tf32``).

The architectures (``--arch``, ``common.ARCHS``) are factories of
``ssl_mae_plugin.mae.MAE_FACTORIES`` with overrides: ``small`` (default, CPU-sized: ViT-Tiny
narrowed to 128-d, 4 blocks, 4 heads, decoder 64-d, 2 blocks, 4 heads; 4x4 patches at 32),
``tiny32`` (ViT-Tiny/4 at 32, the CIFAR recipe's model), ``vit_base`` and ``vit_large``
(the paper's ViT-B/16 and ViT-L/16 at 224); ``--set`` overrides single fields.

Run (CPU, small default architecture)::

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/throughput.py --compile

GPU (ViT-B/16 at 224)::

    .venv/bin/python benchmarks/throughput.py --device cuda --arch vit_base --batch 256 \
        --compile --out benchmarks/throughput_cuda.json
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import subprocess
import sys
import time
import traceback
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from common import (
    ARCHS,
    HERE,
    arch_config,
    cell,
    command_line,
    machine_info,
    markdown_table,
    ratio,
    summarize,
    write_json,
)
from torch import nn
from torch.autograd import DeviceType
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity

DEFAULT_BATCH = {"small": 64, "tiny32": 64, "vit_base": 256, "vit_large": 128}
# Dense peak TFLOP/s (bf16 tensor core, tf32 tensor core, fp32 without tensor cores) by
# GPU name, from NVIDIA's data sheets; the first name contained in the device name wins.
PEAK_TFLOPS = {
    "H100 PCIe": (756.0, 378.0, 51.2),
    "H100": (989.4, 494.7, 66.9),
    "H200": (989.4, 494.7, 66.9),
    "A100": (312.0, 156.0, 19.5),
    "L40S": (362.1, 183.0, 91.6),
}
ALL_MODELS = ("ours", "ours_forward", "lightly", "hf")


# --------------------------------------------------------------------------- models


class OursStep(nn.Module):
    """``ssl_mae_plugin.MAE``; ``entry`` picks ``training_loss`` or ``forward``."""

    def __init__(self, arch: dict, mask_ratio: float, entry: str) -> None:
        super().__init__()
        from ssl_mae_plugin import MAE

        self.mae = MAE(**arch, mask_ratio=mask_ratio, norm_pix_loss=True)
        self.entry = entry

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.mae.set_grad_checkpointing(enable)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.entry == "training_loss":
            return self.mae.training_loss(images)
        return self.mae(images).loss


class LightlyStep(nn.Module):
    """lightly 1.6's MAE modules wired as lightly's ViT-B/16 MAE benchmark."""

    def __init__(self, arch: dict, mask_ratio: float) -> None:
        super().__init__()
        from lightly.models import utils
        from lightly.models.modules import (
            MaskedVisionTransformerDecoderTIMM,
            MaskedVisionTransformerTIMM,
        )
        from lightly.models.modules.masked_vision_transformer_timm import init_weights
        from timm.models.vision_transformer import VisionTransformer

        self.utils = utils
        vit = VisionTransformer(
            img_size=arch["img_size"],
            patch_size=arch["patch_size"],
            in_chans=3,
            num_classes=0,
            embed_dim=arch["embed_dim"],
            depth=arch["depth"],
            num_heads=arch["num_heads"],
            mlp_ratio=arch["mlp_ratio"],
            qkv_bias=True,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
        )
        self.mask_ratio = mask_ratio
        self.patch_size = arch["patch_size"]
        self.backbone = MaskedVisionTransformerTIMM(vit=vit)
        self.sequence_length = self.backbone.sequence_length
        decoder_dim = arch["decoder_embed_dim"]
        # lightly 1.6 keeps the decoder embedding and pixel head outside the decoder.
        self.decoder_embed = nn.Linear(arch["embed_dim"], decoder_dim)
        self.decoder = MaskedVisionTransformerDecoderTIMM(
            num_patches=vit.patch_embed.num_patches,
            embed_dim=decoder_dim,
            depth=arch["decoder_depth"],
            num_heads=arch["decoder_num_heads"],
            mlp_ratio=arch["mlp_ratio"],
        )
        self.decoder_pred = nn.Linear(decoder_dim, arch["patch_size"] ** 2 * 3)
        init_weights(self.decoder_embed)
        init_weights(self.decoder_pred)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.backbone.set_grad_checkpointing(enable)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        utils = self.utils
        batch_size = images.shape[0]
        idx_keep, idx_mask = utils.random_token_mask(
            size=(batch_size, self.sequence_length),
            mask_ratio=self.mask_ratio,
            device=images.device,
        )
        x_encoded = self.backbone.encode(images=images, idx_keep=idx_keep)
        # build decoder input
        x_decode = self.decoder_embed(x_encoded)
        x_masked = utils.repeat_token(self.decoder.mask_token, (batch_size, self.sequence_length))
        x_masked = utils.set_at_index(x_masked, idx_keep, x_decode.type_as(x_masked))
        # decoder forward pass
        x_decoded = self.decoder.decode(self.decoder.add_pos_embed(x_masked))
        # predict pixel values for masked tokens
        x_pred = utils.get_at_index(x_decoded, idx_mask)
        x_pred = self.decoder_pred(x_pred)
        # get image patches for masked tokens (idx_mask counts the class token)
        patches = utils.patchify(images, self.patch_size)
        target = utils.get_at_index(patches, idx_mask - 1)
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
        return F.mse_loss(x_pred, target)


class HFStep(nn.Module):
    """transformers' ``ViTMAEForPreTraining`` built from a config."""

    def __init__(self, arch: dict, mask_ratio: float) -> None:
        super().__init__()
        from transformers import ViTMAEConfig, ViTMAEForPreTraining

        config = ViTMAEConfig(
            hidden_size=arch["embed_dim"],
            num_hidden_layers=arch["depth"],
            num_attention_heads=arch["num_heads"],
            intermediate_size=int(arch["embed_dim"] * arch["mlp_ratio"]),
            image_size=arch["img_size"],
            patch_size=arch["patch_size"],
            num_channels=3,
            qkv_bias=True,
            decoder_hidden_size=arch["decoder_embed_dim"],
            decoder_num_hidden_layers=arch["decoder_depth"],
            decoder_num_attention_heads=arch["decoder_num_heads"],
            decoder_intermediate_size=int(arch["decoder_embed_dim"] * arch["mlp_ratio"]),
            mask_ratio=mask_ratio,
            norm_pix_loss=True,
            layer_norm_eps=1e-6,
            hidden_act="gelu",
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
        config._attn_implementation = "sdpa"
        self.model = ViTMAEForPreTraining(config)
        self.attn_implementation = self.model.config._attn_implementation

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if enable:
            self.model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        else:
            self.model.gradient_checkpointing_disable()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=images).loss


def import_for(name: str) -> None:
    """Import what ``build(name, ...)`` needs, so that imports stay out of memory deltas."""
    if name.startswith("ours"):
        import ssl_mae_plugin.mae  # noqa: F401  (the package itself imports its names lazily)
    elif name == "lightly":
        import lightly.models.modules  # noqa: F401
        import timm.models.vision_transformer  # noqa: F401
    elif name == "hf":
        import transformers  # noqa: F401
        from transformers import ViTMAEForPreTraining  # noqa: F401


def build(name: str, arch: dict, mask_ratio: float) -> nn.Module:
    if name == "ours":
        return OursStep(arch, mask_ratio, "training_loss")
    if name == "ours_forward":
        return OursStep(arch, mask_ratio, "forward")
    if name == "lightly":
        return LightlyStep(arch, mask_ratio)
    if name == "hf":
        return HFStep(arch, mask_ratio)
    raise ValueError(f"unknown model {name!r}; choose from {ALL_MODELS}")


# ---------------------------------------------------------------------- measuring


OPTIMIZERS = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def make_optimizer(module: nn.Module, kind: str = "default") -> torch.optim.Optimizer:
    params = [p for p in module.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        params, lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05, **OPTIMIZERS[kind]
    )


def train_step(fn, optimizer, images, device_type: str, bf16: bool) -> torch.Tensor:
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=bf16):
        loss = fn(images)
    loss.backward()
    optimizer.step()
    return loss.detach()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# Substrings of profiler event names, lower-cased; attention is checked first (some fused
# attention kernels are CUTLASS-based).
ATTENTION_EVENTS = ("flash", "fmha", "attention", "scaled_dot_product", "efficient_attn")
MATMUL_EVENTS = ("gemm", "cutlass", "nvjet", "xmma", "aten::mm", "aten::addmm", "aten::bmm")


def event_kind(name: str) -> str:
    """``attention``, ``matmul`` or ``other`` for a profiler event (op or kernel) name."""
    lowered = name.lower()
    if any(part in lowered for part in ATTENTION_EVENTS):
        return "attention"
    if any(part in lowered for part in MATMUL_EVENTS):
        return "matmul"
    return "other"


def profile_steps(fn, optimizer, images, device: torch.device, bf16: bool, steps: int) -> dict:
    """Where ``steps`` training steps spend their time: GPU kernel time on CUDA, the ops'
    own CPU time on the CPU; the matmul / attention / other shares and the top 15 events."""
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(steps):
            train_step(fn, optimizer, images, device.type, bf16)
        synchronize(device)
    if cuda:
        events = [
            (e.key, e.self_device_time_total)
            for e in prof.key_averages()
            if e.device_type == DeviceType.CUDA
        ]
    else:
        events = [(e.key, e.self_cpu_time_total) for e in prof.key_averages()]
    total = sum(time_us for _, time_us in events) or 1.0
    shares = dict.fromkeys(("matmul", "attention", "other"), 0.0)
    for name, time_us in events:
        shares[event_kind(name)] += time_us / total
    top = sorted(events, key=lambda event: -event[1])[:15]
    return {
        "steps": steps,
        "measure": "GPU kernel time" if cuda else "CPU self time of the ops",
        "ms_per_step": total / 1e3 / steps,
        "shares": shares,
        "top": [
            {"name": name[:160], "ms_per_step": time_us / 1e3 / steps, "share": time_us / total}
            for name, time_us in top
        ],
    }


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def resident_bytes(module: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    state = [
        value
        for per_param in optimizer.state.values()
        for value in per_param.values()
        if torch.is_tensor(value)
    ]
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return (
        tensor_bytes(module.parameters())
        + tensor_bytes(module.buffers())
        + tensor_bytes(state)
        + tensor_bytes(grads)
    )


def read_status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def flops_per_image(arch: dict, mask_ratio: float, in_chans: int = 3) -> dict[str, float]:
    """Matmul FLOPs of the official MAE algorithm per image (2 FLOPs per multiply-add)."""
    p, d, dd, r = (
        arch["patch_size"],
        arch["embed_dim"],
        arch["decoder_embed_dim"],
        arch["mlp_ratio"],
    )
    img = _pair(arch["img_size"])
    num_patches = (img[0] // p) * (img[1] // p)
    pixels = p * p * in_chans
    tokens_enc = 1 + int(num_patches * (1 - mask_ratio))
    tokens_dec = 1 + num_patches

    def block_macs(tokens: int, dim: int) -> float:
        linear = tokens * (4 + 2 * r) * dim * dim  # qkv (3), proj (1), fc1 + fc2 (2r)
        attention = 2 * tokens * tokens * dim  # q @ k^T and attn @ v
        return linear + attention

    encoder = num_patches * pixels * d + arch["depth"] * block_macs(tokens_enc, d)
    decoder = (
        tokens_enc * d * dd
        + arch["decoder_depth"] * block_macs(tokens_dec, dd)
        + num_patches * dd * pixels
    )
    forward = 2 * (encoder + decoder)
    return {
        "encoder_forward": 2 * encoder,
        "decoder_forward": 2 * decoder,
        "forward": forward,
        "train": 3 * forward,
    }


def default_peak_tflops(precision: str) -> float | None:
    """Peak of the GPU for the precision (fp32 runs use TF32 tensor cores under --tf32)."""
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(0)
    for key, (bf16, tf32, fp32) in PEAK_TFLOPS.items():
        if key in name:
            if precision == "bf16":
                return bf16
            return tf32 if torch.backends.cuda.matmul.allow_tf32 else fp32
    return None


def cpu_memory_in_subprocess(spec: dict, timeout: float) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--memory-child", json.dumps(spec)]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False, env=os.environ
        )
    except subprocess.TimeoutExpired:
        return {"status": "timeout"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {"status": "failed", "error": (done.stderr or done.stdout)[-2000:]}


def memory_child(spec: dict) -> None:
    """Entry point of the CPU memory subprocess: prints one JSON line."""
    torch.manual_seed(0)
    device = torch.device(spec["device"])
    arch = spec["arch"]
    images = torch.randn(spec["batch"], 3, *_pair(arch["img_size"]), device=device)
    import_for(spec["model"])
    gc.collect()
    rss_before = read_status_kb("VmRSS")
    try:
        module = build(spec["model"], arch, spec["mask_ratio"]).to(device).train()
        if spec["grad_ckpt"]:
            module.set_grad_checkpointing(True)
        optimizer = make_optimizer(module, spec["optimizer"])
        fn = torch.compile(module, mode=spec["compile_mode"]) if spec["compile"] else module
        for _ in range(3):
            train_step(fn, optimizer, images, device.type, spec["precision"] == "bf16")
    except Exception as error:  # reported to the parent
        print(json.dumps({"status": "failed", "error": f"{type(error).__name__}: {error}"[:2000]}))
        return
    peak = read_status_kb("VmHWM")
    print(json.dumps({"status": "ok", "peak_mb": (peak - rss_before) / 1024}))


def _pair(size) -> tuple[int, int]:
    return tuple(size) if isinstance(size, (tuple, list)) else (size, size)


def run_config(
    device: torch.device,
    precision: str,
    compiled: bool,
    names: list[str],
    args: argparse.Namespace,
    arch: dict,
) -> list[dict[str, Any]]:
    bf16 = precision == "bf16"
    mode = "compile" if compiled else "eager"
    torch.manual_seed(0)
    images = torch.randn(args.batch, 3, *_pair(arch["img_size"]), device=device)
    if compiled:
        torch._dynamo.reset()
    entries: dict[str, dict[str, Any]] = {}
    runners = {}
    for name in names:
        row: dict[str, Any] = {
            "device": device.type,
            "precision": precision,
            "mode": mode,
            "model": name,
            "batch": args.batch,
            "grad_checkpointing": args.grad_ckpt,
        }
        entries[name] = row
        try:
            torch.manual_seed(0)
            module = build(name, arch, args.mask_ratio).to(device).train()
            if args.grad_ckpt:
                module.set_grad_checkpointing(True)
            row["trainable_params"] = sum(p.numel() for p in module.parameters() if p.requires_grad)
            if name == "hf":
                row["attn_implementation"] = module.attn_implementation
            optimizer = make_optimizer(module, args.optimizer)
            fn = torch.compile(module, mode=args.compile_mode) if compiled else module
            synchronize(device)
            start = time.perf_counter()
            for _ in range(args.warmup):
                loss = train_step(fn, optimizer, images, device.type, bf16)
            synchronize(device)
            row["warmup_seconds"] = time.perf_counter() - start
            if not math.isfinite(loss.item()):
                raise RuntimeError(f"non-finite loss {loss.item()}")
            runners[name] = (module, fn, optimizer)
            row["status"] = "ok"
        except Exception as error:  # a failing mode is a result, not a crash
            row["status"] = "failed"
            row["error"] = f"{type(error).__name__}: {error}"[:2000]
            if args.verbose:
                traceback.print_exc()
            print(f"  {name} {device.type} {precision} {mode}: FAILED {row['error'][:200]}")

    rates: dict[str, list[float]] = {name: [] for name in runners}
    cpu_rates: dict[str, list[float]] = {name: [] for name in runners}
    step_peak: dict[str, int] = dict.fromkeys(runners, 0)
    for _ in range(args.repeats):
        for name, (_module, fn, optimizer) in list(runners.items()):
            synchronize(device)
            if device.type == "cuda":
                base = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            try:
                for _ in range(args.steps):
                    loss = train_step(fn, optimizer, images, device.type, bf16)
                synchronize(device)
            except Exception as error:  # e.g. out of memory: recorded, the others go on
                entries[name].update(status="failed", error=f"{type(error).__name__}: {error}")
                print(f"  {name} {device.type} {precision} {mode}: FAILED while timing: {error}")
                del runners[name]
                continue
            elapsed = time.perf_counter() - start
            cpu_elapsed = time.process_time() - cpu_start
            rates[name].append(args.batch * args.steps / elapsed)
            cpu_rates[name].append(args.batch * args.steps / cpu_elapsed)
            entries[name]["final_loss"] = loss.item()
            if device.type == "cuda":
                grown = torch.cuda.max_memory_allocated(device) - base
                step_peak[name] = max(step_peak[name], grown)

    for name, (_module, fn, optimizer) in runners.items():
        if args.profile:
            profile = profile_steps(fn, optimizer, images, device, bf16, args.profile)
            entries[name]["profile"] = profile
            shares = ", ".join(f"{kind} {share:.0%}" for kind, share in profile["shares"].items())
            print(
                f"   {name:>12}: {profile['measure']} {profile['ms_per_step']:.1f} ms/step "
                f"({shares}); top: {profile['top'][0]['name'][:60]} "
                f"{profile['top'][0]['share']:.0%}"
            )

    flops = flops_per_image(arch, args.mask_ratio)["train"]
    peak_tflops = args.peak_tflops or default_peak_tflops(precision)
    for name, (module, _fn, optimizer) in runners.items():
        row = entries[name]
        row["images_per_second"] = summarize(rates[name])
        row["images_per_second_runs"] = rates[name]
        if device.type == "cpu":
            row["images_per_cpu_second"] = summarize(cpu_rates[name])
            row["images_per_cpu_second_runs"] = cpu_rates[name]
        if device.type == "cuda":
            resident = resident_bytes(module, optimizer)
            row["peak_memory_mb"] = (resident + step_peak[name]) / 2**20
            row["memory_measure"] = "resident + max_memory_allocated growth over a timed block"
            if peak_tflops:
                median = row["images_per_second"]["median"]
                row["mfu"] = median * flops / (peak_tflops * 1e12)
                row["peak_tflops"] = peak_tflops
    runners.clear()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()

    if device.type == "cpu" and args.memory != "off" and (args.memory == "all" or not compiled):
        for name, row in entries.items():
            if row["status"] != "ok":
                continue
            spec = {
                "model": name,
                "arch": arch,
                "batch": args.batch,
                "device": "cpu",
                "precision": precision,
                "compile": compiled,
                "compile_mode": args.compile_mode,
                "optimizer": args.optimizer,
                "mask_ratio": args.mask_ratio,
                "grad_ckpt": args.grad_ckpt,
            }
            result = cpu_memory_in_subprocess(spec, timeout=args.memory_timeout)
            if result.get("status") == "ok":
                row["peak_memory_mb"] = result["peak_mb"]
                row["memory_measure"] = "subprocess VmHWM - VmRSS before building the model"
            else:
                row["memory_error"] = result
    return list(entries.values())


# ---------------------------------------------------------------------- reporting


def results_table(rows: list[dict[str, Any]], reference: str = "hf") -> str:
    columns = [
        "device",
        "precision",
        "mode",
        "model",
        "images/s (median)",
        "min – max",
        "IQR",
        f"vs {reference}",
        "images/CPU-s",
        f"vs {reference} (CPU-s)",
        "peak memory (MB)",
        "MFU",
    ]

    def median(row: dict[str, Any] | None, key: str) -> float | None:
        return row[key]["median"] if row and key in row else None

    baseline = {
        (r["device"], r["precision"], r["mode"]): r
        for r in rows
        if r["model"] == reference and r["status"] == "ok"
    }
    cells = []
    for r in rows:
        key = (r["device"], r["precision"], r["mode"])
        if r["status"] != "ok":
            error = r.get("error", "").splitlines()[0][:80].replace("|", "/")
            cells.append([*key, r["model"], f"failed: {error}"])
            continue
        ips, ref = r["images_per_second"], baseline.get(key)
        cpu = median(r, "images_per_cpu_second")
        cells.append(
            [
                *key,
                r["model"],
                f"{ips['median']:.1f}",
                f"{ips['min']:.1f} – {ips['max']:.1f}",
                f"{ips['q1']:.1f} – {ips['q3']:.1f}",
                ratio(ips["median"], median(ref, "images_per_second")),
                cell(cpu, ".1f"),
                ratio(cpu, median(ref, "images_per_cpu_second")),
                cell(r.get("peak_memory_mb"), ".0f"),
                cell(r.get("mfu"), ".1%"),
            ]
        )
    return markdown_table(columns, cells, left=4)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="ours,lightly,hf", help=f"from {','.join(ALL_MODELS)}")
    parser.add_argument("--arch", default="small", choices=sorted(ARCHS))
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an architecture field, e.g. --set depth=6",
    )
    parser.add_argument("--batch", type=int, default=None, help="default: per --arch")
    parser.add_argument("--mask-ratio", type=float, default=0.75)
    parser.add_argument("--precision", default="fp32,bf16", help="fp32,bf16")
    parser.add_argument("--compile", action="store_true", help="also run torch.compile'd")
    parser.add_argument("--no-eager", action="store_true", help="only the compiled mode")
    parser.add_argument(
        "--compile-mode", default=None, help="torch.compile mode, e.g. max-autotune-no-cudagraphs"
    )
    parser.add_argument("--tf32", action="store_true", help="TF32 matmuls for fp32 on CUDA")
    parser.add_argument(
        "--sdpa-backend",
        choices=("flash", "cudnn", "efficient", "math"),
        default=None,
        help="only this attention kernel (SDPA), for every model; default: torch's choice",
    )
    parser.add_argument(
        "--optimizer",
        default="default",
        choices=sorted(OPTIMIZERS),
        help="AdamW implementation, the same for every model (torch's default, foreach, fused)",
    )
    parser.add_argument("--grad-ckpt", action="store_true", help="gradient checkpointing on")
    parser.add_argument("--repeats", type=int, default=5, help="timed blocks per model")
    parser.add_argument("--steps", type=int, default=5, help="train steps per timed block")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument(
        "--device",
        default="auto",
        help="cpu, cuda or cpu,cuda; auto: cuda when present, plus cpu for the CPU-sized archs",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument(
        "--memory",
        default="all",
        choices=("all", "eager", "off"),
        help="CPU peak-memory subprocesses: every mode, eager only, or none",
    )
    parser.add_argument("--memory-timeout", type=float, default=900.0)
    parser.add_argument("--peak-tflops", type=float, default=None, help="for MFU on CUDA")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="STEPS",
        help="after timing, profile STEPS steps of each model: time shares of matmul, "
        "attention and other work and the top events (JSON rows' 'profile')",
    )
    parser.add_argument("--out", default=str(HERE / "throughput.json"))
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def resolve_arch(args: argparse.Namespace) -> dict[str, Any]:
    arch = arch_config(args.arch)
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in arch:
            raise SystemExit(f"--set {item}: unknown field {key!r}; fields: {sorted(arch)}")
        arch[key] = type(arch[key])(float(value)) if key == "mlp_ratio" else int(value)
    return arch


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.memory_child is not None:
        memory_child(json.loads(args.memory_child))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if args.sdpa_backend:  # for the whole run: every model's attention takes this kernel
        backends = {
            "flash": SDPBackend.FLASH_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "math": SDPBackend.MATH,
        }
        sdpa_kernel(backends[args.sdpa_backend]).__enter__()
    arch = resolve_arch(args)
    args.batch = args.batch or DEFAULT_BATCH[args.arch]
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    for name in names:
        if name not in ALL_MODELS:
            raise SystemExit(f"unknown model {name!r}; choose from {ALL_MODELS}")
    if args.device == "auto":
        # The CPU too, next to a GPU, unless the architecture is a 224-pixel one.
        cpu_sized = args.arch in ("small", "tiny32")
        devices = ["cpu"] if cpu_sized or not torch.cuda.is_available() else []
        devices += ["cuda"] if torch.cuda.is_available() else []
    else:
        devices = [d.strip() for d in args.device.split(",")]
    precisions = [p.strip() for p in args.precision.split(",")]
    modes = ([] if args.no_eager else [False]) + ([True] if args.compile else [])

    info = machine_info()
    flops = flops_per_image(arch, args.mask_ratio)
    print(
        f"arch {args.arch} {arch}, batch {args.batch}, models {names}, "
        f"train GFLOPs/image {flops['train'] / 1e9:.3f}"
    )
    print(
        f"machine: {info['cpu']} x{info['cpu_cores']}, torch {info['torch']}, "
        f"threads {info['torch_threads']}, gpu {info.get('gpu')}"
    )
    rows: list[dict[str, Any]] = []
    for device_name in devices:
        device = torch.device(device_name)
        for precision in precisions:
            for compiled in modes:
                print(f"-- {device_name} {precision} {'compile' if compiled else 'eager'}")
                rows += run_config(device, precision, compiled, names, args, arch)
                for row in rows[-len(names) :]:
                    if row["status"] == "ok":
                        print(
                            f"   {row['model']:>12}: "
                            f"{row['images_per_second']['median']:8.1f} img/s"
                            f" (warmup {row['warmup_seconds']:.1f}s)"
                        )
    info["loadavg_end"] = os.getloadavg()
    result = {
        "benchmark": "MAE pretraining train step (forward + backward + AdamW)",
        "machine": info,
        "arch_name": args.arch,
        "arch": arch,
        "mask_ratio": args.mask_ratio,
        "norm_pix_loss": True,
        "batch": args.batch,
        "tf32": args.tf32,
        "compile_mode": args.compile_mode,
        "sdpa_backend": args.sdpa_backend,
        "optimizer": args.optimizer,
        "steps_per_repeat": args.steps,
        "repeats": args.repeats,
        "warmup_steps": args.warmup,
        "flops_per_image": flops,
        "command": command_line(),
        "rows": rows,
    }
    out = write_json(args.out, result)
    table = results_table(rows)
    print()
    print(table)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
