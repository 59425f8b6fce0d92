"""The OFA encoder: image patches + text tokens -> a transformer stack -> EncoderOutput.

Sequence layout: [image patches (row-major); text tokens], S = N + L. Positions are never added
to the tokens; they enter every layer as an attention bias:

    bias_l = q_p k_p^T                       shared absolute term, q_p/k_p from LayerNorm'ed positions
           + token_rel_l[bucket(i - j)]      on the text block
           + image_rel_l[bucket(p_i, p_j)]   on the image block
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .config import MAX_POSITION_BUCKETS, POSITION_TABLE_EXTRA, linear_rates, RESNET_OUT_CHANNELS, OFAConfig
from .layers import EncoderLayer
from .linear import Linear
from .positions import image_bucket_table, image_position_ids, num_image_buckets, token_bucket_table
from .resnet import ResNetStem

TEXT_TYPE, IMAGE_TYPE = 0, 1


@dataclass
class EncoderOutput:
    """What the decoder needs from the encoder (batch first).

    out: [B, S, D] final hidden states (after `encoder.layer_norm`).
    padding_mask: [B, S] bool, True = padding.
    position_embeddings: [B or 1, S, D] LayerNorm'ed positions, for the decoder's cross bias
        (batch 1 when every row has the same positions).
    states: per-layer inputs/outputs ([embeddings, layer 1, ...], before the final norm) when asked.
    source, source_rows: after `index_select`, the encoder's own output and, per row [B], the row
        of it that this row copies. Beam search repeats every row beam times; the decoder uses
        these to project the cross-attention keys/values of each distinct row once.
    """

    out: torch.Tensor
    padding_mask: torch.Tensor
    position_embeddings: torch.Tensor
    states: list[torch.Tensor] = field(default_factory=list)
    source: "EncoderOutput | None" = None
    source_rows: torch.Tensor | None = None

    def index_select(self, order: torch.Tensor) -> "EncoderOutput":
        """Rows reordered/repeated by `order` (beam search)."""
        pos = self.position_embeddings
        return EncoderOutput(
            out=self.out.index_select(0, order),
            padding_mask=self.padding_mask.index_select(0, order),
            position_embeddings=pos if pos.size(0) == 1 else pos.index_select(0, order),
            states=[s.index_select(0, order) for s in self.states],
            source=self if self.source is None else self.source,
            source_rows=order if self.source_rows is None else self.source_rows.index_select(0, order),
        )


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, T, D] -> [B, H, T, D / H] (a view)."""
    B, T, D = x.shape
    return x.view(B, T, heads, D // heads).transpose(1, 2)


def split_heads_bias(q: torch.Tensor, k: torch.Tensor, heads: int, scaling: float) -> torch.Tensor:
    """Absolute position bias (q * scaling) k^T per head.

    Args:
        q: [B, T, D]; k: [B, S, D] (batch may be 1 on either side).
    Returns:
        [B, H, T, S]
    """
    return torch.matmul(split_heads(q, heads) * scaling, split_heads(k, heads).transpose(-1, -2))


def layer_bias(abs_bias: torch.Tensor, token_table: torch.Tensor, text_bucket: torch.Tensor,
               image_table: torch.Tensor, image_bucket: torch.Tensor | None) -> torch.Tensor:
    """One layer's attention bias: the shared absolute term plus the layer's relative terms.

    Args:
        abs_bias: [B|1, H, S, S], S = N image patches + L text tokens (in that order).
        token_table: [2 * token_bucket_size - 1, H] the layer's text relative-position table.
        text_bucket: [L, L] bucket ids.
        image_table: [num_image_buckets, H] the layer's image relative-position table.
        image_bucket: [B|1, N, N] bucket ids, or None without an image.
    Returns:
        a new [B', H, S, S] tensor, B' the larger batch of abs_bias and image_bucket: abs_bias
        plus token_table[text_bucket] on the text block and image_table[image_bucket] on the image
        block. Written into a copy of abs_bias, gathered head-major from the transposed tables:
        no zero-filled relative tensor, no permuted copies (bit-identical to building the relative
        terms in a zero-filled tensor and adding it, with fewer passes over [B', H, S, S]).
    """
    N = 0 if image_bucket is None else image_bucket.size(1)
    rows = abs_bias.size(0) if image_bucket is None else max(abs_bias.size(0), image_bucket.size(0))
    bias = abs_bias.expand(rows, -1, -1, -1).clone()  # [B', H, S, S]
    bias[:, :, N:, N:] += token_table.t()[:, text_bucket]  # [H, L, L]
    if image_bucket is not None:
        H, B_img = image_table.size(1), image_bucket.size(0)
        image = image_table.t().index_select(1, image_bucket.flatten())  # [H, B_img * N * N]
        bias[:, :, :N, :N] += image.view(H, B_img, N, N).transpose(0, 1)  # [B_img, H, N, N]
    return bias


class Encoder(nn.Module):
    """Image + text encoder of OFA.

    Args:
        cfg: the architecture.
        embed_tokens: the token embedding shared with the decoder and the output projection.
    """

    def __init__(self, cfg: OFAConfig, embed_tokens: nn.Embedding):
        # nn.Module.__init__ by name: a fairseq subclass (model/ofa.py) initialises its own base first
        nn.Module.__init__(self)
        D, H = cfg.encoder_embed_dim, cfg.encoder_attention_heads
        self.cfg = cfg
        self.num_heads = H
        self.pad = cfg.pad
        self.image_bucket_size = cfg.image_bucket_size
        # registration order = the released state-dict order
        self.register_buffer("version", torch.tensor([3.0]))
        self.register_buffer("token_rp_bucket", token_bucket_table(cfg.token_bucket_size, MAX_POSITION_BUCKETS))
        self.register_buffer("image_rp_bucket", image_bucket_table(cfg.image_bucket_size))
        self.embed_tokens = embed_tokens
        self.layernorm_embedding = nn.LayerNorm(D)  # text token embeddings
        self.type_embedding = nn.Embedding(2, D) if cfg.add_type_embedding else None
        self.embed_images = ResNetStem(cfg.resnet_layers, cfg.resnet_drop_path_rate, cfg.freeze_resnet)
        self.image_proj = Linear(RESNET_OUT_CHANNELS, D)
        self.patch_layernorm_embedding = nn.LayerNorm(D)  # image patch embeddings
        self.embed_positions = nn.Embedding(cfg.max_source_positions + POSITION_TABLE_EXTRA, D)
        self.embed_image_positions = nn.Embedding(cfg.image_bucket_size ** 2 + 1, D)
        self.pos_ln = nn.LayerNorm(D)  # text positions
        self.image_pos_ln = nn.LayerNorm(D)  # image positions
        self.pos_scaling = (D / H * cfg.attn_scale_factor) ** -0.5
        self.pos_q_linear = Linear(D, D)
        self.pos_k_linear = Linear(D, D)
        rates = linear_rates(cfg.encoder_drop_path_rate, cfg.encoder_layers)
        self.layers = nn.ModuleList(EncoderLayer(cfg, r) for r in rates)
        self.layer_norm = nn.LayerNorm(D)  # after the last layer
        self.token_rel_pos_table_list = nn.ModuleList(
            nn.Embedding(2 * cfg.token_bucket_size - 1, H) for _ in range(cfg.encoder_layers))
        self.image_rel_pos_table_list = nn.ModuleList(
            nn.Embedding(num_image_buckets(cfg.image_bucket_size), H) for _ in range(cfg.encoder_layers))

    def embed_image(self, patch_images: torch.Tensor, sample_patch_num: int | None = None,
                    generator: torch.Generator | None = None):
        """Image -> patch embeddings and their position ids.

        Args:
            patch_images: [B, 3, H, W] normalised pixels.
            sample_patch_num: keep this many random patches per image (pretraining only).
            generator: randomness for `sample_patch_num`.
        Returns:
            x [B, N, D], position ids [B or 1, N]
        """
        feats = self.embed_images(patch_images)  # [B, 1024, h, w]
        B, _, h, w = feats.shape
        x = feats.flatten(2).transpose(1, 2)  # [B, N, 1024], row-major patches
        pos_ids = image_position_ids(h, w, self.image_bucket_size).to(x.device)[None]  # [1, N]
        if sample_patch_num is not None and self.training:
            keep = torch.stack([
                torch.randperm(h * w, generator=generator, device="cpu")[:sample_patch_num].sort().values
                for _ in range(B)]).to(x.device)  # [B, k]
            x = x.gather(1, keep[..., None].expand(-1, -1, x.size(-1)))
            pos_ids = pos_ids.expand(B, -1).gather(1, keep)
        x = self.image_proj(x)
        if self.cfg.entangle_position_embedding:
            x = x + self.embed_image_positions(pos_ids)
        if self.type_embedding is not None:
            x = x + self.type_embedding.weight[IMAGE_TYPE]
        return self.patch_layernorm_embedding(x), pos_ids

    def embed_text(self, src_tokens: torch.Tensor) -> torch.Tensor:
        """src_tokens [B, L] -> [B, L, D] (no embedding scale, as every released model)."""
        x = self.embed_tokens(src_tokens)
        if self.cfg.entangle_position_embedding:
            x = x + self.embed_positions(torch.arange(src_tokens.size(1), device=x.device))
        if self.type_embedding is not None:
            x = x + self.type_embedding.weight[TEXT_TYPE]
        return self.layernorm_embedding(x)

    def forward(self, src_tokens: torch.Tensor, src_lengths: torch.Tensor | None = None,
                patch_images: torch.Tensor | None = None, patch_masks: torch.Tensor | None = None,
                return_all_hiddens: bool = False, sample_patch_num: int | None = None,
                generator: torch.Generator | None = None, **unused) -> EncoderOutput:
        """Encode an image and a text prompt.

        Args:
            src_tokens: [B, L] ids, right-padded with pad.
            src_lengths: unused (fairseq passes it).
            patch_images: [B, 3, H, W] or None for text only.
            patch_masks: [B] bool, False = this row has no image (its patches are masked).
            return_all_hiddens: keep every layer's output in `states`.
        """
        B, L = src_tokens.shape
        device = src_tokens.device
        text = self.embed_text(src_tokens)  # [B, L, D]
        text_pad = src_tokens.eq(self.pad)  # [B, L]
        text_pos = self.embed_positions(torch.arange(L, device=device))[None]  # [1, L, D]
        parts, pads, positions = [text], [text_pad], [self.pos_ln(text_pos)]
        n_image = 0
        if patch_images is not None:
            image, image_pos_ids = self.embed_image(patch_images, sample_patch_num, generator)
            n_image = image.size(1)
            if patch_masks is None:
                patch_masks = torch.ones(B, dtype=torch.bool, device=device)
            image_pad = (~patch_masks.bool())[:, None].expand(B, n_image)
            image_pos = self.image_pos_ln(self.embed_image_positions(image_pos_ids))  # [B|1, N, D]
            if image_pos.size(0) != 1 and text_pos.size(0) == 1:
                positions[0] = positions[0].expand(image_pos.size(0), -1, -1)
            parts.insert(0, image)
            pads.insert(0, image_pad)
            positions.insert(0, image_pos)
        x = torch.cat(parts, dim=1)  # [B, S, D]
        padding_mask = torch.cat(pads, dim=1)  # [B, S]
        pos = torch.cat(positions, dim=1)  # [B|1, S, D]
        has_pad = bool(padding_mask.any())
        if has_pad:
            x = x * (1 - padding_mask[..., None].type_as(x))
        x = F.dropout(x, self.cfg.dropout, self.training)

        abs_bias = split_heads_bias(self.pos_q_linear(pos), self.pos_k_linear(pos),
                                    self.num_heads, self.pos_scaling)  # [B|1, H, S, S]
        if has_pad:
            abs_bias = abs_bias.masked_fill(padding_mask[:, None, None, :], float("-inf"))
        text_bucket = self.token_rp_bucket[:L, :L]  # [L, L]
        image_bucket = None
        if n_image:
            image_bucket = self.image_rp_bucket[image_pos_ids[:, :, None], image_pos_ids[:, None, :]]  # [B|1, N, N]

        states = [x] if return_all_hiddens else []
        for i, layer in enumerate(self.layers):
            bias = layer_bias(abs_bias, self.token_rel_pos_table_list[i].weight, text_bucket,
                              self.image_rel_pos_table_list[i].weight, image_bucket)
            x = layer(x, bias)
            if return_all_hiddens:
                states.append(x)
        x = self.layer_norm(x)
        return EncoderOutput(out=x, padding_mask=padding_mask, position_embeddings=pos, states=states)
