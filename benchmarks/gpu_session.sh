#!/usr/bin/env bash
# The GPU measurements of benchmarks/RESULTS.md, in one script for a lent GPU machine whose
# python3 already has torch, torchvision, timm, transformers and pytorch-lightning (and no
# network). It needs two things beside the checkout:
#   .whl/lightly-1.6.0-py3-none-any.whl   pip download --no-deps lightly==1.6.0 -d .whl
#   .gpudata/cifar10.tgz                  tar czf .gpudata/cifar10.tgz -C <cifar10 root> train test
# Usage (from the repository root):
#   OUT=<results folder> bash benchmarks/gpu_session.sh STAGE...
# Stages: setup (install + unpack; always first), smoke (every CIFAR recipe method for one
# short epoch on the GPU, evaluated), throughput (ViT-B/16 and ViT-Tiny/4 train steps: ours
# vs lightly vs HF), mfu (ours' ViT-B/16 at batch 512, compiled, fused AdamW, with a
# kernel-time profile), e2e (ssl-mae pretrain vs lightly's MAE code path on the JPEGs, and
# ours from memory), recipe (recipes/cifar10_vit_tiny_mae.yaml for $RECIPE_EPOCHS epochs).
# What the stages write lands in $OUT/results.tgz (no checkpoints or feature caches); the
# recipe's report, figures and metrics also in $OUT itself; logs go to stdout too.
set -uo pipefail
OUT=${OUT:-runs/gpu}
RESULTS=/tmp/gpu-results
DATA=/tmp/cifar10
RECIPE_EPOCHS=${RECIPE_EPOCHS:-100}
mkdir -p "$OUT" "$RESULTS"
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site
CLI=(python3 -m ssl_mae_plugin.cli)

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

STAGES=(setup smoke throughput mfu e2e recipe)
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
