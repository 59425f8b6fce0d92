"""Encoder and decoder layers of OFA: pre-LN transformer layers with OFA's extra norms.

Batch first ([B, T, D]). Each sub-layer is

    x = x + drop_path(dropout(extra_ln(sublayer(pre_ln(x)))))

where `extra_ln` is the `scale_attn` norm after an attention, and the FFN has its own
`scale_fc` norm over F between its two linears. Attribute names are the released keys; several
mislead, so each says what it normalises.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import MultiheadAttention
from .blocks import DropPath
from .config import OFAConfig
from .linear import Linear


def _maybe_ln(enabled: bool, dim: int) -> nn.Module | None:
    return nn.LayerNorm(dim) if enabled else None


def _apply(norm: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    return x if norm is None else norm(x)


class FeedForward:
    """The FFN block shared by both layer kinds (a mixin: its parameters live on the layer)."""

    fc1: nn.Linear
    fc2: nn.Linear
    final_layer_norm: nn.LayerNorm
    ffn_layernorm: nn.LayerNorm | None
    w_resid: nn.Parameter | None

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        x = self.final_layer_norm(x)  # despite its name: the norm BEFORE the FFN
        x = F.gelu(self.fc1(x).float()).type_as(x)  # exact (erf) GELU in fp32, as the original
        x = F.dropout(x, self.activation_dropout, self.training)
        x = _apply(self.ffn_layernorm, x)
        x = F.dropout(self.fc2(x), self.dropout, self.training)
        if self.w_resid is not None:
            residual = self.w_resid * residual
        return residual + self.drop_path(x)


class EncoderLayer(nn.Module, FeedForward):
    """Self-attention + FFN over the [image; text] sequence."""

    def __init__(self, cfg: OFAConfig, drop_path_rate: float = 0.0):
        super().__init__()
        D, F_ = cfg.encoder_embed_dim, cfg.encoder_ffn_embed_dim
        self.dropout, self.activation_dropout = cfg.dropout, cfg.activation_dropout
        # registration order = the released state-dict order
        self.self_attn = MultiheadAttention(D, cfg.encoder_attention_heads, dropout=cfg.attention_dropout,
                                            scale_factor=cfg.attn_scale_factor, scale_heads=cfg.scale_heads)
        self.self_attn_layer_norm = nn.LayerNorm(D)  # pre-attention norm
        self.fc1 = Linear(D, F_)
        self.fc2 = Linear(F_, D)
        self.attn_ln = _maybe_ln(cfg.scale_attn, D)  # post-attention norm (scale_attn)
        self.ffn_layernorm = _maybe_ln(cfg.scale_fc, F_)  # inside the FFN, over F (scale_fc)
        self.w_resid = nn.Parameter(torch.ones(D)) if cfg.scale_resids else None
        self.final_layer_norm = nn.LayerNorm(D)  # pre-FFN norm
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """x [B, S, D], bias [B|1, H, S, S] (position bias + -inf on padded keys) -> [B, S, D]"""
        residual = x
        x = self.self_attn(self.self_attn_layer_norm(x), bias=bias)
        x = F.dropout(_apply(self.attn_ln, x), self.dropout, self.training)
        x = residual + self.drop_path(x)
        return self._ffn(x)


class DecoderLayer(nn.Module, FeedForward):
    """Causal self-attention, cross-attention over the encoder output, FFN."""

    def __init__(self, cfg: OFAConfig, drop_path_rate: float = 0.0):
        super().__init__()
        D, F_ = cfg.decoder_embed_dim, cfg.decoder_ffn_embed_dim
        H = cfg.decoder_attention_heads
        self.dropout, self.activation_dropout = cfg.dropout, cfg.activation_dropout
        attn = dict(dropout=cfg.attention_dropout, scale_factor=cfg.attn_scale_factor, scale_heads=cfg.scale_heads)
        # registration order = the released state-dict order
        self.self_attn = MultiheadAttention(D, H, **attn)
        self.self_attn_ln = _maybe_ln(cfg.scale_attn, D)  # after self-attention (scale_attn)
        self.cross_attn_ln = _maybe_ln(cfg.scale_attn, D)  # after cross-attention (scale_attn)
        self.self_attn_layer_norm = nn.LayerNorm(D)  # before self-attention
        self.encoder_attn = MultiheadAttention(D, H, kdim=cfg.encoder_embed_dim, **attn)
        self.encoder_attn_layer_norm = nn.LayerNorm(D)  # before cross-attention
        self.ffn_layernorm = _maybe_ln(cfg.scale_fc, F_)  # inside the FFN, over F (scale_fc)
        self.fc1 = Linear(D, F_)
        self.fc2 = Linear(F_, D)
        self.w_resid = nn.Parameter(torch.ones(D)) if cfg.scale_resids else None
        self.final_layer_norm = nn.LayerNorm(D)  # pre-FFN norm
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        # On a CPU a decoding step reads each of these weights for a few rows (the beams), and
        # oneDNN reorders a plain weight on every such call: a packed copy, kept until the weight
        # changes (`Linear.pack_weight`), costs 198 MB for base and saves 5-19 % of its beam-5
        # generation at batch 1, 3-12 % at batch 4 (README, "Same run"). The cross-attention's keys
        # and values are projected once per sentence and stay plain.
        for linear in (self.self_attn.k_proj, self.self_attn.v_proj, self.self_attn.q_proj, self.self_attn.out_proj,
                       self.encoder_attn.q_proj, self.encoder_attn.out_proj, self.fc1, self.fc2):
            linear.pack_weight = True

    def forward(self, x: torch.Tensor, self_kv: tuple[torch.Tensor, torch.Tensor] | None,
                self_bias: torch.Tensor | None, cross: tuple[torch.Tensor, torch.Tensor] | torch.Tensor,
                cross_bias: torch.Tensor | None,
                cross_group: int = 1) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """One decoder layer.

        Args:
            x: [B, T, D] the new positions (T = 1 when decoding step by step).
            self_kv: cached self-attention keys/values of earlier positions, two [B, H, t, d], or None.
            self_bias: [B|1, H, T, t+T] position bias + causal/padding -inf.
            cross: the encoder output's keys/values, two [B / cross_group, H, S, d] (computed once,
                when decoding step by step), or the encoder output itself [B, S, D_enc] (a full
                pass: the cross-attention projects it or folds the projections, `folded_attention`).
            cross_bias: [B|1, H, T, S], or [B / cross_group | 1, H, 1, S] when grouped.
            cross_group: g > 1 when rows [u*g, (u+1)*g) all read row u of the cached keys/values
                (beams of one sentence); then T must be 1.
        Returns:
            x [B, T, D] and the self-attention keys/values of all t+T positions (for the cache).
        """
        residual = x
        h = self.self_attn_layer_norm(x)
        k, v = self.self_attn.project_kv(h)
        if self_kv is not None:
            k, v = torch.cat([self_kv[0], k], dim=2), torch.cat([self_kv[1], v], dim=2)
        h = self.self_attn.attend(h, k, v, self_bias)
        h = F.dropout(_apply(self.self_attn_ln, h), self.dropout, self.training)
        x = residual + self.drop_path(h)

        residual = x
        h = self.encoder_attn_layer_norm(x)
        if isinstance(cross, torch.Tensor):
            h = self.encoder_attn(h, cross, cross_bias)
        elif cross_group > 1:
            # the g beams of a sentence read the same encoder row: one row of g queries, no K/V copies
            R, T, D = h.shape
            assert T == 1, f"grouped cross-attention needs one new position per row, got {T}"
            h = self.encoder_attn.attend(h.view(R // cross_group, cross_group, D), *cross, cross_bias)
            h = h.view(R, T, D)
        else:
            h = self.encoder_attn.attend(h, *cross, cross_bias)
        h = F.dropout(_apply(self.cross_attn_ln, h), self.dropout, self.training)
        x = residual + self.drop_path(h)
        return self._ffn(x), (k, v)
