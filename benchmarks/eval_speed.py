"""Speed and accuracy of the cached evaluations at CIFAR-10 scale, on the CPU.

Synthetic but realistic features: 50,000 x 192 train, 10,000 val, 10 classes; each class
a mixture of 3 Gaussian sub-clusters, mapped through a random rotation with a power-law
spectrum (strongly correlated dimensions, condition number ~130 after standardising), a
GELU and per-dimension scales spanning 100x. Measures k-NN (k=200), the cached linear
probe (100 epochs; the default SGD and the paper's LARS) and a converged scikit-learn
logistic regression on standardised features as the accuracy reference.

Run: ``.venv/bin/python benchmarks/eval_speed.py`` (writes eval_speed.json / EVAL_SPEED.md).
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from common import HERE, machine_info, markdown_table, write_json
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from ssl_mae_plugin.evaluation import knn_classify, linear_probe

THREADS = 2
# Versions recorded next to ``ssl_mae_plugin.report.machine.LIBRARIES``.
PACKAGES = ("numpy", "scikit-learn")


def make_features(
    seed: int = 0,
    n_train: int = 50_000,
    n_val: int = 10_000,
    dim: int = 192,
    num_classes: int = 10,
    sep: float = 0.15,
    subclusters: int = 3,
):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(num_classes, dim, generator=g) * sep
    centers = means[:, None] + torch.randn(num_classes, subclusters, dim, generator=g) * sep
    spectrum = torch.arange(1, dim + 1, dtype=torch.float32) ** -1.0
    rotation, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g))
    bias = 0.5 * torch.randn(dim, generator=g)
    scales = torch.logspace(-1, 1, dim)[torch.randperm(dim, generator=g)]

    def sample(n):
        y = torch.randint(0, num_classes, (n,), generator=g)
        sub = torch.randint(0, subclusters, (n,), generator=g)
        z = centers[y, sub] + torch.randn(n, dim, generator=g)
        x = F.gelu((z * spectrum) @ rotation.T * 3 + bias) * scales
        return x, y

    train_x, train_y = sample(n_train)
    val_x, val_y = sample(n_val)
    return train_x, train_y, val_x, val_y


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    torch.set_num_threads(THREADS)
    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
    machine = machine_info(PACKAGES)
    train_x, train_y, val_x, val_y = make_features()

    knn, knn_s = timed(lambda: knn_classify(train_x, train_y, val_x, val_y, k=200))
    probes = {}
    for name, kwargs in {
        "sgd (default)": {},
        "lars (paper optimizer, same batch / blr)": {"optimizer": "lars"},
    }.items():
        out = linear_probe(train_x, train_y, val_x, val_y, epochs=100, **kwargs)
        out.pop("history")
        probes[name] = out

    scaler = StandardScaler().fit(train_x.numpy())
    xs_train, xs_val = scaler.transform(train_x.numpy()), scaler.transform(val_x.numpy())
    clf = LogisticRegression(max_iter=5000, tol=1e-6)
    _, logreg_s = timed(lambda: clf.fit(xs_train, train_y.numpy()))
    logreg = {
        "top1": float(clf.score(xs_val, val_y.numpy())),
        "train_top1": float(clf.score(xs_train, train_y.numpy())),
        "iterations": int(np.max(clf.n_iter_)),
        "converged": bool(np.max(clf.n_iter_) < clf.max_iter),
        "seconds": logreg_s,
    }

    result = {
        "machine": machine,
        "data": {"train": list(train_x.shape), "val": list(val_x.shape), "classes": 10},
        "knn": {"k": knn["k"], "top1": knn["top1"], "top5": knn["top5"], "seconds": knn_s},
        "linear_probe": probes,
        "logistic_regression": logreg,
    }
    write_json(HERE / "eval_speed.json", result)
    (HERE / "EVAL_SPEED.md").write_text(markdown(result))
    print(json.dumps(result, indent=2))


def markdown(result: dict) -> str:
    """The text of ``EVAL_SPEED.md`` for a result of ``main``."""
    m = result["machine"]
    ref = result["logistic_regression"]
    rows = [
        [
            f"k-NN (k={result['knn']['k']}, T=0.1)",
            f"{result['knn']['seconds']:.1f}",
            f"{100 * result['knn']['top1']:.2f}",
        ]
    ]
    for name, out in result["linear_probe"].items():
        gap = 100 * (out["top1"] - ref["top1"])
        rows.append(
            [
                f"linear probe, {name}, 100 epochs",
                f"{out['seconds']:.1f}",
                f"{100 * out['top1']:.2f} "
                f"(best {100 * out['best_top1']:.2f} @ {out['best_epoch']})",
                f"{gap:+.2f}",
            ]
        )
    rows.append(
        [
            f"sklearn LogisticRegression (lbfgs, standardised, {ref['iterations']} it, "
            f"converged={ref['converged']})",
            f"{ref['seconds']:.1f}",
            f"{100 * ref['top1']:.2f}",
            "0",
        ]
    )
    columns = ["evaluation", "seconds", "val top-1 %", "vs logistic regression (points)"]
    return "\n".join(
        [
            "# Evaluation speed (cached features, CPU)",
            "",
            "`benchmarks/eval_speed.py`: synthetic CIFAR-10-scale features (50,000 x 192 train, "
            "10,000 val, 10 classes; Gaussian sub-cluster mixture through a correlated, "
            "GELU-warped, badly scaled map so that accuracy is ~60%, not 100%). Fixed seed.",
            "",
            f"Machine: {m['cpu_cores']} CPU cores ({m['cpu']}), torch {m['torch']} with "
            f"{m['torch_threads']} threads, Python {m['python']}. The cores were shared with "
            f"another workload (load average {m['loadavg_start'][0]:.1f} at start), so "
            "times are upper bounds.",
            "",
            markdown_table(columns, rows),
            "",
            "`top1` of the probe is the final epoch's (not selected on the validation set); "
            "`best` is the maximum over epochs, reported for reference only.",
            "",
            "Why SGD for the cached probe: the features are on the device once, batches are "
            "`randperm` slices (no DataLoader), batch 1024, lr = 0.1 x 1024 / 256 with momentum "
            "0.9, 5 warmup epochs then per-step cosine; this reaches the converged logistic "
            "regression. The paper's LARS (trust coefficient 0.001) scales every weight update "
            "to ~lr x 1e-3 of the weight norm: right for ImageNet at batch 16,384 with "
            "augmented crops, far too slow for 100 epochs of cached CIFAR-scale features. It "
            "stays the optimizer of `augmented_linear_probe` (the paper's protocol) and is "
            'available here as `optimizer="lars"`.',
            "",
        ]
    )


if __name__ == "__main__":
    main()
