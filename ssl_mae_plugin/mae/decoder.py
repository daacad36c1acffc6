"""The MAE decoder: a light transformer that predicts the pixels of removed patches.

- [0]: Masked Autoencoders Are Scalable Vision Learners, 2021, https://arxiv.org/abs/2111.06377
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from timm.models._manipulate import checkpoint_seq
from timm.models.vision_transformer import Block
from torch import nn

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
    """Embeds the encoder's visible tokens, fills in mask tokens and predicts patch pixels.

    The decoder sees every position: the visible tokens and one shared, learned mask token
    for each removed patch, put back in image order and given fixed sine-cosine positions
    [0]. Its parameter names map one-to-one onto facebookresearch/mae's ``decoder_*`` keys.

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
        self.grid_size = tuple(grid_size)
        self.embed = nn.Linear(encoder_dim, embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(
            sincos_2d(embed_dim, self.grid_size, cls_token=True).unsqueeze(0),
            requires_grad=False,
        )
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.Sequential(
            *[
                Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
                for _ in range(depth)
            ]
        )
        self.norm = norm_layer(embed_dim)
        self.pred = nn.Linear(embed_dim, patch_size * patch_size * in_chans)
        self.grad_checkpointing = False

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Predict the pixels of every patch.

        Args:
            latent: Encoder output ``[N, 1 + len_keep, D_enc]``, cls token first.
            ids_restore: ``[N, L]`` indices that undo the masking shuffle.

        Returns:
            ``[N, L, p*p*C]`` predicted pixels, in the original patch order.
        """
        x = self.embed(latent)  # [N, 1 + len_keep, D]
        n, num_visible, dim = x.shape[0], x.shape[1] - 1, x.shape[2]
        length = ids_restore.shape[1]
        mask_tokens = self.mask_token.to(x.dtype).expand(n, length - num_visible, -1)
        patches = torch.cat([x[:, 1:, :], mask_tokens], dim=1)  # [N, L, D], shuffled order
        patches = torch.gather(
            patches, dim=1, index=ids_restore.unsqueeze(-1).expand(-1, -1, dim)
        )  # [N, L, D], image order
        x = torch.cat([x[:, :1, :], patches], dim=1) + self.pos_embed  # [N, 1 + L, D]
        x = run_blocks(self.blocks, x, self.grad_checkpointing)
        x = self.norm(x)
        return self.pred(x[:, 1:, :])  # [N, L, p*p*C]

    def forward_removed(self, latent: torch.Tensor, ids_shuffle: torch.Tensor) -> torch.Tensor:
        """Predict the pixels of the removed patches only (the training path).

        The same function as :meth:`forward` restricted to the removed patches, computed
        without unshuffling: the blocks are permutation-equivariant (attention with no
        mask or relative bias, per-token MLP and norm), so the tokens stay in shuffled
        order, cls + visible + mask tokens, and each takes its position from the fixed
        table looked up by ``ids_shuffle``. The removed tokens are then a contiguous slice:
        no gather of activations, no scatter in the backward pass, and the final norm and
        pixel head run on the removed tokens only.

        Args:
            latent: Encoder output ``[N, 1 + len_keep, D_enc]``, cls token first, visible
                tokens in the order of ``ids_shuffle[:, :len_keep]``.
            ids_shuffle: ``[N, L]`` patch indices, visible ones first (see
                :func:`~ssl_mae_plugin.mae.masking.shuffle_ids`).

        Returns:
            ``[N, L - len_keep, p*p*C]`` predicted pixels of patches
            ``ids_shuffle[:, len_keep:]``, in that order.
        """
        x = self.embed(latent)  # [N, 1 + len_keep, D]
        n, num_visible = x.shape[0], x.shape[1] - 1
        length = ids_shuffle.shape[1]
        mask_tokens = self.mask_token.to(x.dtype).expand(n, length - num_visible, -1)
        x = torch.cat([x, mask_tokens], dim=1)  # [N, 1 + L, D]: cls, visible, removed
        # Position row of every token: 0 for cls, 1 + patch index for the patches.
        rows = torch.cat([ids_shuffle.new_zeros(n, 1), ids_shuffle + 1], dim=1)  # [N, 1 + L]
        x = x + F.embedding(rows, self.pos_embed[0])  # [N, 1 + L, D]
        x = run_blocks(self.blocks, x, self.grad_checkpointing)
        x = self.norm(x[:, 1 + num_visible :, :])  # [N, L - len_keep, D], removed only
        return self.pred(x)  # [N, L - len_keep, p*p*C]
