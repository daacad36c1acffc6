"""The MAE decoder's parameters: a light transformer that predicts the pixels of patches.

The forward pass is :meth:`ssl_mae_plugin.mae.model.MAE.forward_decoder`, next to the
encoder's, so that the whole data flow reads in one file as in facebookresearch/mae.

- [0]: Masked Autoencoders Are Scalable Vision Learners, 2021, https://arxiv.org/abs/2111.06377
"""

from __future__ import annotations

import torch
from timm.models import checkpoint_seq
from timm.models.vision_transformer import Block
from torch import nn

from ssl_mae_plugin.mae.encoder import norm_layer
from ssl_mae_plugin.mae.pos_embed import sincos_2d


def run_blocks(blocks: nn.Sequential, x: torch.Tensor, grad_checkpointing: bool) -> torch.Tensor:
    """Run transformer blocks, each under (non-reentrant) gradient checkpointing if asked.

    Checkpointing stores only each block's input and recomputes the block in the backward
    pass: less activation memory for one more forward of the blocks. It is skipped when no
    gradients are being recorded.
    """
    if grad_checkpointing and torch.is_grad_enabled():
        return checkpoint_seq(blocks, x, use_reentrant=False)
    return blocks(x)


class MAEDecoder(nn.Module):
    """Decoder embedding, one shared mask token, fixed positions, blocks, norm, pixel head.

    The decoder sees every position: the visible tokens and the mask token for each
    removed patch, with fixed sine-cosine positions [0]. The names map one-to-one onto
    facebookresearch/mae's keys (``embed`` is ``decoder_embed``, ``mask_token`` is
    ``mask_token``, ...).

    Args:
        grid_size: ``(rows, cols)`` of the patch grid.
        patch_size: Side of a square patch in pixels.
        in_chans: Image channels; the pixel head predicts ``patch_size**2 * in_chans`` values.
        encoder_dim: Width of the encoder tokens.
        embed_dim: Width of the decoder.
        depth: Number of transformer blocks.
        num_heads: Attention heads per block.
        mlp_ratio: Hidden width of the MLPs relative to ``embed_dim``.
    """

    def __init__(
        self,
        grid_size: tuple[int, int],
        patch_size: int,
        in_chans: int,
        encoder_dim: int,
        embed_dim: int = 512,
        depth: int = 8,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(
                f"decoder_embed_dim={embed_dim} is not divisible by decoder_num_heads={num_heads}"
            )
        self.embed = nn.Linear(encoder_dim, embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        table = sincos_2d(embed_dim, tuple(grid_size), cls_token=True).unsqueeze(0)
        self.pos_embed = nn.Parameter(table, requires_grad=False)
        self.blocks = nn.Sequential(
            *[
                Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
                for _ in range(depth)
            ]
        )
        self.norm = norm_layer(embed_dim)
        self.pred = nn.Linear(embed_dim, patch_size * patch_size * in_chans)
        self.grad_checkpointing = False
