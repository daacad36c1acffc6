"""Masked Autoencoder: a timm ViT encoder on the visible patches and a light decoder.

The class reads top to bottom as facebookresearch/mae's ``models_mae.py``: the paper's
forward pass (:meth:`MAE.forward_encoder`, :meth:`MAE.forward_decoder`,
:meth:`MAE.forward_loss`), then the training path that computes the same loss with less
work (:meth:`MAE.training_loss`), then features and checkpoints.

- [0]: Masked Autoencoders Are Scalable Vision Learners, 2021, https://arxiv.org/abs/2111.06377
"""

from __future__ import annotations

from os import PathLike
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ssl_mae_plugin.mae import checkpoints
from ssl_mae_plugin.mae.decoder import MAEDecoder, run_blocks
from ssl_mae_plugin.mae.encoder import vit_encoder
from ssl_mae_plugin.mae.loss import masked_mse_loss, removed_patches_mse
from ssl_mae_plugin.mae.masking import gather_tokens, num_kept, random_masking, shuffle_ids
from ssl_mae_plugin.mae.patches import patchify
from ssl_mae_plugin.mae.pos_embed import sincos_2d

POOLS = ("cls", "mean")


class MAEOutput(NamedTuple):
    """What :meth:`MAE.forward` returns.

    Attributes:
        loss: Scalar reconstruction loss on the removed patches.
        pred: ``[N, L, p*p*C]`` predicted pixels (normalised target space under norm-pix).
        mask: ``[N, L]``, 1 for removed patches, 0 for visible ones.
        ids_restore: ``[N, L]`` indices that undo the masking shuffle.
    """

    loss: torch.Tensor
    pred: torch.Tensor
    mask: torch.Tensor
    ids_restore: torch.Tensor


class MAE(nn.Module):
    """Masked Autoencoder with a timm ``VisionTransformer`` encoder [0].

    Defaults are ViT-B/16 with the paper's 512-d, 8-block decoder.

    Args:
        img_size: Input size, an int or ``(H, W)``; divisible by ``patch_size``.
        patch_size: Side of a square patch in pixels.
        in_chans: Image channels.
        embed_dim: Encoder width.
        depth: Encoder blocks.
        num_heads: Encoder attention heads.
        decoder_embed_dim: Decoder width.
        decoder_depth: Decoder blocks.
        decoder_num_heads: Decoder attention heads.
        mlp_ratio: MLP hidden width relative to the block width (encoder and decoder).
        mask_ratio: Default fraction of patches to remove; it must keep at least one patch
            and remove at least one.
        norm_pix_loss: Regress per-patch normalised pixels.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        decoder_embed_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        mlp_ratio: float = 4.0,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = False,
    ) -> None:
        super().__init__()
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.config: dict[str, Any] = {
            "img_size": img_size,
            "patch_size": patch_size,
            "in_chans": in_chans,
            "embed_dim": embed_dim,
            "depth": depth,
            "num_heads": num_heads,
            "decoder_embed_dim": decoder_embed_dim,
            "decoder_depth": decoder_depth,
            "decoder_num_heads": decoder_num_heads,
            "mlp_ratio": mlp_ratio,
            "mask_ratio": mask_ratio,
            "norm_pix_loss": norm_pix_loss,
        }
        self.encoder = vit_encoder(
            img_size=img_size,
            patch_size=patch_size,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            in_chans=in_chans,
            mlp_ratio=mlp_ratio,
            weight_init="skip",
        )
        self.encoder.pos_embed.requires_grad_(False)  # fixed sin-cos table
        self.img_size, self.patch_size, self.in_chans = img_size, patch_size, in_chans
        self.grid_size = (img_size[0] // patch_size, img_size[1] // patch_size)
        num_kept(self.num_patches, mask_ratio)  # raises for a ratio that keeps all or none
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        self.decoder = MAEDecoder(
            grid_size=self.grid_size,
            patch_size=patch_size,
            in_chans=in_chans,
            encoder_dim=embed_dim,
            embed_dim=decoder_embed_dim,
            depth=decoder_depth,
            num_heads=decoder_num_heads,
            mlp_ratio=mlp_ratio,
        )
        self.initialize_weights()

    @property
    def num_patches(self) -> int:
        """Patches per image, ``L``."""
        return self.grid_size[0] * self.grid_size[1]

    @torch.no_grad()
    def initialize_weights(self) -> None:
        """Initialise as facebookresearch/mae.

        Fixed sine-cosine position tables; patch projection xavier-uniform on the weight
        viewed as 2-D; cls and mask tokens normal(0.02); every Linear xavier-uniform with
        zero bias; LayerNorm weight 1, bias 0.
        """
        for table in (self.encoder.pos_embed, self.decoder.pos_embed):
            table.copy_(sincos_2d(table.shape[-1], self.grid_size, cls_token=True)[None])
        proj = self.encoder.patch_embed.proj.weight
        nn.init.xavier_uniform_(proj.view(proj.shape[0], -1))
        nn.init.normal_(self.encoder.cls_token, std=0.02)
        nn.init.normal_(self.decoder.mask_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def check_images(self, imgs: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``imgs`` is ``[N, in_chans, *img_size]``."""
        if imgs.ndim != 4 or imgs.shape[1] != self.in_chans:
            raise ValueError(
                f"images must have shape [N, {self.in_chans}, H, W] (in_chans={self.in_chans}), "
                f"got {tuple(imgs.shape)}"
            )
        if tuple(imgs.shape[-2:]) != self.img_size:
            raise ValueError(
                f"images are {tuple(imgs.shape[-2:])} but the model's img_size is {self.img_size}"
            )

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the encoder and decoder blocks in the backward pass (or stop doing so).

        Saves most of the activation memory of large ViTs for about one more forward pass
        of the blocks; the loss and gradients are unchanged.
        """
        self.encoder.set_grad_checkpointing(enable)
        self.decoder.grad_checkpointing = enable

    # -- the paper's forward pass -------------------------------------------------------------

    def forward_encoder(
        self, imgs: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Embed all patches, keep a random ``1 - mask_ratio`` of them, encode those [0].

        Returns:
            The latent ``[N, 1 + len_keep, D]`` (cls first), the mask ``[N, L]`` (1 =
            removed) and ``ids_restore`` ``[N, L]``.
        """
        encoder = self.encoder
        x = encoder.patch_embed(imgs)  # [N, L, D]
        x = x + encoder.pos_embed[:, 1:, :]
        x, mask, ids_restore = random_masking(x, mask_ratio, noise)  # [N, len_keep, D]
        cls = encoder.cls_token + encoder.pos_embed[:, :1, :]
        x = torch.cat([cls.expand(x.shape[0], -1, -1), x], dim=1)  # [N, 1 + len_keep, D]
        x = run_blocks(encoder.blocks, x, encoder.grad_checkpointing)
        return encoder.norm(x), mask, ids_restore

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Predict the pixels of every patch from the visible tokens and mask tokens [0].

        Returns:
            ``[N, L, p*p*C]`` predicted pixels, in the original patch order.
        """
        decoder = self.decoder
        x = decoder.embed(latent)  # [N, 1 + len_keep, Dd]
        n, length = x.shape[0], ids_restore.shape[1]
        mask_tokens = decoder.mask_token.to(x.dtype).expand(n, length + 1 - x.shape[1], -1)
        x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)  # [N, L, Dd], shuffled order
        x_ = gather_tokens(x_, ids_restore)  # [N, L, Dd], image order
        x = torch.cat([x[:, :1, :], x_], dim=1) + decoder.pos_embed  # [N, 1 + L, Dd]
        x = run_blocks(decoder.blocks, x, decoder.grad_checkpointing)
        return decoder.pred(decoder.norm(x))[:, 1:, :]  # [N, L, p*p*C], cls dropped

    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor):
        """Per-patch MSE averaged over the removed patches (norm-pix target if set) [0]."""
        target = patchify(imgs, self.patch_size)  # [N, L, p*p*C]
        return masked_mse_loss(pred, target, mask, norm_pix_loss=self.norm_pix_loss)

    def forward(
        self,
        imgs: torch.Tensor,
        mask_ratio: float | None = None,
        noise: torch.Tensor | None = None,
    ) -> MAEOutput:
        """Mask, encode, decode and score a batch; :meth:`training_loss` is the fast path.

        Args:
            imgs: ``[N, C, H, W]`` normalised images.
            mask_ratio: Fraction of patches to remove; the model's default when omitted.
            noise: Optional ``[N, L]`` noise deciding the mask (smallest values are kept).

        Returns:
            :class:`MAEOutput` ``(loss, pred, mask, ids_restore)``.
        """
        self.check_images(imgs)
        mask_ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        latent, mask, ids_restore = self.forward_encoder(imgs, mask_ratio, noise)
        pred = self.forward_decoder(latent, ids_restore)  # [N, L, p*p*C]
        loss = self.forward_loss(imgs, pred, mask)
        return MAEOutput(loss=loss, pred=pred, mask=mask, ids_restore=ids_restore)

    # -- the training path: the same loss, less work ----------------------------------------

    def training_loss(
        self,
        imgs: torch.Tensor,
        mask_ratio: float | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The loss of :meth:`forward` for the same ``noise``, computed for training only.

        Only the visible patches are embedded, the decoder keeps its tokens in shuffled
        order and the pixel head and the loss run on the removed patches only. Shapes are
        static for a given ``mask_ratio``, so the method compiles into one graph.
        """
        self.check_images(imgs)
        mask_ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        len_keep = num_kept(self.num_patches, mask_ratio)
        ids_shuffle = shuffle_ids(imgs.shape[0], self.num_patches, noise, imgs.device)  # [N, L]
        patches = patchify(imgs, self.patch_size)  # [N, L, p*p*C]
        latent = self._encode_visible(patches, ids_shuffle[:, :len_keep])  # [N, 1 + K, D]
        pred = self._decode_removed(latent, ids_shuffle)  # [N, L - K, p*p*C]
        target = gather_tokens(patches, ids_shuffle[:, len_keep:])  # [N, L - K, p*p*C]
        return removed_patches_mse(pred, target, norm_pix_loss=self.norm_pix_loss)

    def _encode_visible(self, patches: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        """:meth:`forward_encoder` projecting only the visible patches' pixels.

        The patch embedding is a convolution with kernel = stride = patch, a linear map of
        each flattened patch, so gathering pixels first and projecting them equals
        projecting all patches and gathering tokens.
        """
        encoder = self.encoder
        proj = encoder.patch_embed.proj
        weight = proj.weight.permute(0, 2, 3, 1).flatten(1)  # [D, p*p*C], patchify's layout
        x = F.linear(gather_tokens(patches, ids_keep), weight, proj.bias)  # [N, K, D]
        x = x + F.embedding(ids_keep, encoder.pos_embed[0, 1:, :])  # their positions
        cls = encoder.cls_token + encoder.pos_embed[:, :1, :]
        x = torch.cat([cls.expand(x.shape[0], -1, -1), x], dim=1)  # [N, 1 + K, D]
        x = run_blocks(encoder.blocks, x, encoder.grad_checkpointing)
        return encoder.norm(x)

    def _decode_removed(self, latent: torch.Tensor, ids_shuffle: torch.Tensor) -> torch.Tensor:
        """:meth:`forward_decoder` restricted to the removed patches, without unshuffling.

        The blocks are permutation-equivariant (attention without mask or relative bias,
        per-token MLP and norm), so the tokens can stay in shuffled order (cls, visible,
        mask tokens), each taking its position row by ``ids_shuffle``. The removed tokens
        are then a contiguous slice: no gather or scatter of activations, and the norm and
        pixel head run on them only.

        Returns:
            ``[N, L - len_keep, p*p*C]`` predictions of patches ``ids_shuffle[:, len_keep:]``.
        """
        decoder = self.decoder
        x = decoder.embed(latent)  # [N, 1 + K, Dd]
        n, num_visible = x.shape[0], x.shape[1] - 1
        num_removed = ids_shuffle.shape[1] - num_visible
        mask_tokens = decoder.mask_token.to(x.dtype).expand(n, num_removed, -1)
        x = torch.cat([x, mask_tokens], dim=1)  # [N, 1 + L, Dd]: cls, visible, removed
        rows = torch.cat([ids_shuffle.new_zeros(n, 1), ids_shuffle + 1], dim=1)  # [N, 1 + L]
        x = x + F.embedding(rows, decoder.pos_embed[0])  # row 0 is the cls position
        x = run_blocks(decoder.blocks, x, decoder.grad_checkpointing)
        return decoder.pred(decoder.norm(x[:, 1 + num_visible :, :]))  # removed tokens only

    # -- features and checkpoints -----------------------------------------------------------

    def forward_features(self, imgs: torch.Tensor, pool: str = "cls") -> torch.Tensor:
        """``[N, D]`` features of whole images (no masking) for evaluation.

        Args:
            imgs: ``[N, C, H, W]`` normalised images.
            pool: ``"cls"`` for the normalised cls token (the paper's linear probe) or
                ``"mean"`` for the mean of the normalised patch tokens.
        """
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        self.check_images(imgs)
        tokens = self.encoder.forward_features(imgs)  # [N, 1 + L, D]
        return tokens[:, 0] if pool == "cls" else tokens[:, 1:].mean(dim=1)

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights under facebookresearch/mae's key names (``models_mae.py``)."""
        return checkpoints.to_official(self.state_dict())

    @classmethod
    def from_official(cls, source: str | PathLike | dict[str, Any], **overrides: Any) -> MAE:
        """Build a model from a facebookresearch/mae checkpoint.

        The architecture is inferred from the tensor shapes (and ``args.norm_pix_loss``
        when the file holds it). ``overrides`` replace inferred settings; a different
        ``img_size`` resizes the position tables. A file without decoder weights (the
        encoder-only releases) loads with a freshly initialised decoder and a warning.

        Args:
            source: A path, a state dict, or a ``{"model": state_dict, ...}`` checkpoint.
            **overrides: Constructor arguments to set explicitly.
        """
        state_dict, inferred = checkpoints.read_official(source)
        model = cls(**{**inferred, **overrides})
        checkpoints.load_official_into(model, state_dict)
        return model
