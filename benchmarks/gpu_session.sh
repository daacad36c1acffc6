#!/usr/bin/env bash
# The GPU measurements of benchmarks/RESULTS.md, in one script for a lent GPU machine whose
# python3 already has torch, torchvision, timm, transformers and pytorch-lightning (and no
# network). It needs three things beside the checkout (all carried to the machine):
#   .whl/   pip download --no-deps -d .whl lightly==1.6.0 litdata==0.2.76 obstore tifffile \
#               boto3 botocore s3transfer jmespath
#   .gpudata/cifar10.tgz   tar czf .gpudata/cifar10.tgz -C <cifar10 root> train test
#   .gpudata/photos/       .venv/bin/python benchmarks/device_decode.py --write-photos .gpudata/photos
# Usage (from the repository root):
#   OUT=<results folder> bash benchmarks/gpu_session.sh STAGE...
# Stages: setup (install + unpack; always first), smoke (every CIFAR recipe method for one
# short epoch on the GPU, evaluated), throughput (ViT-B/16 and ViT-Tiny/4 train steps: ours
# vs lightly vs HF), mfu (ours' ViT-B/16 at batch 512, compiled, fused AdamW, with a
# kernel-time profile), e2e (ssl-mae pretrain vs lightly's MAE code path on the JPEGs, and
# ours from memory), recipe (recipes/cifar10_vit_tiny_mae.yaml for $RECIPE_EPOCHS epochs),
# peers (ViT-B/16 bf16 at batch 512, compiled, fused AdamW for ours, lightly and HF alike,
# with a kernel profile), product (`ssl-mae pretrain` on ViT-B/16 from synthetic images in
# memory against the bare compiled step), lever (run 2: ours' step with other compile modes
# and attention kernels), decode (data.decode: device on the photos' JPEGs: nvJPEG images/s),
# shards (`ssl-mae pretrain` of ViT-B/16 from LitData shards of ImageNet-sized JPEGs with
# data.decode: device, against the bare compiled step). DRY=1 runs every stage's commands on the CPU at toy sizes, to
# check the script before a GPU session.
# What the stages write lands in $OUT/results.tgz (no checkpoints or feature caches); the
# recipe's report, figures and metrics also in $OUT itself; logs go to stdout too.
set -uo pipefail
OUT=${OUT:-runs/gpu}
RESULTS=/tmp/gpu-results
DATA=/tmp/cifar10
RECIPE_EPOCHS=${RECIPE_EPOCHS:-100}
mkdir -p "$OUT" "$RESULTS"
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site
PY=${PYTHON:-python3}  # DRY=1 PYTHON=.venv/bin/python for the CPU rehearsal
CLI=("$PY" -m ssl_mae_plugin.cli)

setup() {
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || return 1
    # Installed (not only on the path) so that the built-in methods' entry points exist.
    python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir \
        --target /tmp/site . || return 1
    mkdir -p "$DATA" && tar xzf .gpudata/cifar10.tgz -C "$DATA" || return 1
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    python3 -c "import torch, timm, lightly, transformers, pytorch_lightning as pl
print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))
print('timm', timm.__version__, 'lightly', lightly.__version__,
      'transformers', transformers.__version__, 'lightning', pl.__version__)"
}

smoke() {
    "${CLI[@]}" run recipes/cifar10_compare.yaml data.dataset=imagefolder "data.root=$DATA" \
        data.val_split=test data.max_train_images=4096 data.max_val_images=2048 pretrain.epochs=1 \
        eval.linear.epochs=2 "output_dir=$RESULTS/smoke" && cat "$RESULTS/smoke/cifar10-compare/report.md"
}

throughput() {
    python3 benchmarks/throughput.py --device cuda --arch vit_base --batch 256 \
        --precision bf16 --compile --repeats 5 --steps 10 \
        --out "$RESULTS/throughput_cuda_vitb16_bf16.json"
    python3 benchmarks/throughput.py --device cuda --arch vit_base --batch 256 \
        --precision fp32 --repeats 3 --steps 5 --out "$RESULTS/throughput_cuda_vitb16_fp32.json"
    python3 benchmarks/throughput.py --device cuda --arch tiny32 --batch 512 \
        --precision bf16 --compile --repeats 5 --steps 20 \
        --out "$RESULTS/throughput_cuda_tiny32_bf16.json"
}

mfu() {
    python3 benchmarks/throughput.py --device cuda --arch vit_base --batch 512 --models ours \
        --precision bf16 --compile --no-eager --repeats 5 --steps 10 --optimizer fused \
        --profile 5 --out "$RESULTS/throughput_cuda_vitb16_bf16_b512.json"
}

e2e() {
    local common=("$DATA" --device cuda --precision bf16-mixed --images 50000 --batch 512
        --epochs 4 --num-workers 12)
    python3 benchmarks/end_to_end.py "${common[@]}" --repeats 1 \
        --out "$RESULTS/end_to_end_cuda.json"
    python3 benchmarks/end_to_end.py "${common[@]}" --repeats 1 --order ours --in-memory \
        --out "$RESULTS/end_to_end_cuda_in_memory.json"
}

recipe() {
    "${CLI[@]}" run recipes/cifar10_vit_tiny_mae.yaml data.dataset=imagefolder "data.root=$DATA" \
        data.val_split=test data.in_memory=true "pretrain.epochs=$RECIPE_EPOCHS" eval.finetune.epochs=10 \
        "output_dir=$RESULTS/recipe"
    local run_dir="$RESULTS/recipe/cifar10-vit-tiny-mae"
    cat "$run_dir/report.md"
    cp "$run_dir"/report.* "$run_dir"/figures/*.png "$OUT/" && cp "$run_dir/mae/metrics.csv" "$OUT/"
}

# Sizes: the real run, or DRY=1 toy sizes on the CPU.
if [ "${DRY:-0}" = 1 ]; then
    DEVICE=cpu ARCH=small BATCH=8 STEPS=1 REPEATS=1 BACKBONE=vit_tiny PATCH=4 SIZE=32
    IMAGES=64 EPOCHS=2 PRECISION=32 TRAINER=cpu WORKERS=0 COPIES=1
    OPTS=(--set depth=1 --set decoder_depth=1 --memory off)
else
    DEVICE=cuda ARCH=vit_base BATCH=512 STEPS=10 REPEATS=5 BACKBONE=vit_base PATCH=16
    SIZE=224 IMAGES=8192 EPOCHS=6 PRECISION=bf16-mixed TRAINER=gpu WORKERS=8 COPIES=4
    OPTS=()
fi
THROUGHPUT=("$PY" benchmarks/throughput.py --device "$DEVICE" --arch "$ARCH" --batch "$BATCH"
    --precision bf16 --compile --no-eager --optimizer fused --repeats "$REPEATS"
    --steps "$STEPS" "${OPTS[@]}")

# `ssl-mae pretrain` NAME of the MAE ($BACKBONE/$PATCH, compiled, norm-pix) on DATA (a YAML
# flow mapping), and its median images/s after the first epoch (which compiles) against
# the bare compiled step (timed once per session): $RESULTS/NAME_vs_bare.json.
pretrain_vs_bare() {
    local name=$1 data=$2
    cat > "$RESULTS/$name.yaml" <<YAML
name: $name
output_dir: $RESULTS/$name
data: $data
methods:
  - {name: mae, backbone: $BACKBONE, patch_size: $PATCH, compile: true, norm_pix_loss: true}
pretrain: {epochs: $EPOCHS, batch_size: $BATCH}
trainer: {accelerator: $TRAINER, precision: $PRECISION, progress_bar: false,
          log_every_n_steps: 50}
YAML
    rm -rf "$RESULTS/$name/$name"  # a rerun trains afresh
    "${CLI[@]}" pretrain "$RESULTS/$name.yaml" || return 1
    cat "$RESULTS/$name/$name/mae/metrics.csv"
    [ -f "$RESULTS/bare_step.json" ] ||
        "${THROUGHPUT[@]}" --models ours --out "$RESULTS/bare_step.json" || return 1
    "$PY" - "$RESULTS" "$name" "$data" <<'PY'
import csv, json, statistics, sys
from pathlib import Path

results, name, data = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
rows = list(csv.DictReader(open(results / name / name / "mae" / "metrics.csv")))
rates = [float(r["images_per_second"]) for r in rows[1:]]  # epoch 1 compiles
bare = json.loads((results / "bare_step.json").read_text())
bare_rate = next(r["images_per_second"]["median"] for r in bare["rows"] if r["status"] == "ok")
rate = statistics.median(rates)
summary = {"run": name, "data": data, "pretrain_images_per_second": rate,
           "bare_step_images_per_second": bare_rate, "pretrain_over_bare": rate / bare_rate,
           "epochs_timed": len(rates)}
print(json.dumps(summary, indent=2))
(results / f"{name}_vs_bare.json").write_text(json.dumps(summary, indent=2) + "\n")
PY
}

peers() {
    "${THROUGHPUT[@]}" --models ours,lightly,hf --profile "$STEPS" \
        --out "$RESULTS/peers_vitb16_bf16_b512_fused.json"
}

product() {
    # Synthetic images (one JPEG size, kept in memory as uint8): the pipeline is not what is
    # measured here, the training loop around the step is.
    "$PY" - "$DATA/synthetic" "$IMAGES" "$SIZE" <<'PY' || return 1
import sys
from pathlib import Path

import numpy as np
from PIL import Image

root, count, size = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
for split, n in (("train", count), ("test", 16)):
    for i in range(n):
        folder = root / split / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)
PY
    pretrain_vs_bare product "{dataset: imagefolder, root: $DATA/synthetic, val_split: test,
        image_size: $SIZE, in_memory: true, num_workers: $WORKERS}"
}

lever() {
    for mode in max-autotune-no-cudagraphs reduce-overhead; do
        "${THROUGHPUT[@]}" --models ours --compile-mode "$mode" \
            --out "$RESULTS/lever_compile_${mode}.json"
    done
    for backend in flash cudnn efficient; do
        "${THROUGHPUT[@]}" --models ours --sdpa-backend "$backend" \
            --out "$RESULTS/lever_sdpa_${backend}.json"
    done
}

decode() {
    "$PY" benchmarks/device_decode.py --photos .gpudata/photos --device "$DEVICE" \
        --batch "$BATCH" --copies "$COPIES" --passes "$REPEATS" \
        --out "$RESULTS/device_decode_$DEVICE.json"
}

shards() {
    # ImageNet-sized JPEGs (the photos' 500 x 375 files, each linked many times) as shards
    local folder="$DATA/photos" kind=shards
    rm -rf "$folder" "$DATA/photo-shards" "$RESULTS/shards"  # a rerun starts afresh
    for split in train test; do
        mkdir -p "$folder/$split"
        cp -r .gpudata/photos/500x375/. "$folder/$split/"
    done
    "$PY" - "$folder/train" "$IMAGES" <<'PY' || return 1
import os, sys
from pathlib import Path

train, count = Path(sys.argv[1]), int(sys.argv[2])
files = sorted(train.rglob("*.jpg"))
for i in range(count - len(files)):
    source = files[i % len(files)]
    os.link(source, source.with_name(f"copy{i}-{source.name}"))
PY
    if "$PY" -c "import litdata" 2>/dev/null; then
        "${CLI[@]}" shards "$folder" "$DATA/photo-shards" --workers "$WORKERS" || return 1
        folder="$DATA/photo-shards"
    else
        kind=imagefolder && echo "litdata missing: reading the image folder instead"
    fi
    pretrain_vs_bare shards "{dataset: $kind, root: $folder, val_split: test,
        image_size: $SIZE, decode: device, num_workers: $WORKERS}"
}

STAGES=(setup smoke throughput mfu e2e recipe peers product lever decode shards)
for stage in "$@"; do
    if [[ ! " ${STAGES[*]} " =~ [[:space:]]${stage}[[:space:]] ]]; then
        echo "gpu_session.sh: unknown stage '$stage'; stages: ${STAGES[*]}" >&2
        exit 2
    fi
done
status=0
for stage in "$@"; do
    echo "=== $stage $(date -u +%T)"
    SECONDS=0
    "$stage" 2>&1 | tee "$RESULTS/$stage.log"
    code=${PIPESTATUS[0]}
    echo "=== $stage exit $code after ${SECONDS}s"
    [ "$code" = 0 ] || status=1
    # After every stage (a timeout keeps the rest); small files only: runs keep checkpoints.
    tar czf "$OUT/results.tgz" -C "$RESULTS" --exclude="*.ckpt" --exclude="*.pt" .
    if [ "$stage" = setup ] && [ "$code" != 0 ]; then break; fi
done
exit $status
