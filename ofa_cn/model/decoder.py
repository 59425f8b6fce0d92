"""The OFA decoder: token embeddings + position biases -> decoder stack -> tied logits.

Decoding starts from bos (id 0). Positions, as in the encoder, only enter as attention biases:

    self bias_l  = q_p k_p^T (target positions)          + token_rel_l[bucket(i - j)]
    cross bias   = q_p (target) . k_p (encoder positions)  (same for every layer)

Step-by-step decoding keeps a cache per layer: the self-attention keys/values of the prefix, and
the cross-attention keys/values of the encoder output, computed once.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .config import MAX_POSITION_BUCKETS, POSITION_TABLE_EXTRA, linear_rates, OFAConfig
from .encoder import EncoderOutput, split_heads_bias
from .layers import DecoderLayer
from .positions import decoder_image_position_table, image_bucket_table, num_image_buckets, token_bucket_table

CACHE_KEY = "ofa_decoder_cache"


class Decoder(nn.Module):
    """Text decoder of OFA with a tied output projection.

    Args:
        cfg: the architecture.
        embed_tokens: the token embedding shared with the encoder; its weight is also the
            output projection's.
    """

    def __init__(self, cfg: OFAConfig, embed_tokens: nn.Embedding):
        # nn.Module.__init__ by name: a fairseq subclass (model/ofa.py) initialises its own base first
        nn.Module.__init__(self)
        D, H = cfg.decoder_embed_dim, cfg.decoder_attention_heads
        self.cfg = cfg
        self.num_heads = H
        self.pad = cfg.pad
        # registration order = the released state-dict order
        self.register_buffer("version", torch.tensor([3.0]))
        self.register_buffer("token_rp_bucket", token_bucket_table(cfg.token_bucket_size, MAX_POSITION_BUCKETS))
        self.register_buffer("image_rp_bucket", image_bucket_table(cfg.image_bucket_size))
        self.register_buffer("image_position_idx",
                             decoder_image_position_table(cfg.code_image_size, cfg.image_bucket_size))
        self.embed_tokens = embed_tokens
        self.layernorm_embedding = nn.LayerNorm(D)
        self.embed_positions = nn.Embedding(cfg.max_target_positions + POSITION_TABLE_EXTRA, D)
        # image-code generation only (text-to-image); kept for the checkpoint format
        self.embed_image_positions = nn.Embedding(cfg.image_bucket_size ** 2 + 1, D)
        self.pos_ln = nn.LayerNorm(D)  # target positions
        self.image_pos_ln = nn.LayerNorm(D)  # image-code positions (unused for text)
        self.pos_scaling = (D / H * cfg.attn_scale_factor) ** -0.5
        self.self_pos_q_linear = nn.Linear(D, D)
        self.self_pos_k_linear = nn.Linear(D, D)
        self.cross_pos_q_linear = nn.Linear(D, D)
        self.cross_pos_k_linear = nn.Linear(D, D)
        self.code_layernorm_embedding = nn.LayerNorm(D)  # image-code tokens (unused for text)
        rates = linear_rates(cfg.decoder_drop_path_rate, cfg.decoder_layers)
        self.layers = nn.ModuleList(DecoderLayer(cfg, r) for r in rates)
        self.layer_norm = nn.LayerNorm(D)  # after the last layer
        self.output_projection = nn.Linear(D, embed_tokens.num_embeddings, bias=False)
        self.output_projection.weight = embed_tokens.weight  # tied
        self.token_rel_pos_table_list = nn.ModuleList(
            nn.Embedding(2 * cfg.token_bucket_size - 1, H) for _ in range(cfg.decoder_layers))
        self.image_rel_pos_table_list = nn.ModuleList(
            nn.Embedding(num_image_buckets(cfg.image_bucket_size), H) for _ in range(cfg.decoder_layers))

    def max_positions(self) -> int:
        return self.cfg.max_target_positions

    def _cross_kv(self, encoder_out: EncoderOutput) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [layer.encoder_attn.project_kv(encoder_out.out) for layer in self.layers]

    def forward(self, prev_output_tokens: torch.Tensor, encoder_out: EncoderOutput,
                incremental_state: dict[str, Any] | None = None, features_only: bool = False,
                return_all_hiddens: bool = False, **unused):
        """Decode.

        Args:
            prev_output_tokens: [B, T] the target shifted right, starting with bos; when
                decoding step by step, the whole prefix (only its last position is computed).
            encoder_out: the encoder's output for the same rows.
            incremental_state: a dict that holds this decoder's cache between steps, or None for
                a full (teacher-forced) pass.
            features_only: return hidden states [B, T, D] instead of logits.
        Returns:
            logits [B, T', V] (T' = 1 when incremental) and {"attn": [None], "inner_states": [...]}.
        """
        B, T = prev_output_tokens.shape
        device = prev_output_tokens.device
        cache = None
        if incremental_state is not None:
            cache = incremental_state.setdefault(CACHE_KEY, {})
        start = 0 if cache is None or "self_kv" not in cache else cache["self_kv"][0][0].size(2)
        new_tokens = prev_output_tokens[:, start:]  # [B, T'] the positions to compute now

        positions = torch.arange(T, device=device)
        tgt_pos = self.embed_positions(positions)[None]  # [1, T, D] raw positions
        tgt_pos_ln = self.pos_ln(tgt_pos)
        q_pos = tgt_pos_ln[:, start:]  # [1, T', D]
        self_bias = split_heads_bias(self.self_pos_q_linear(q_pos), self.self_pos_k_linear(tgt_pos_ln),
                                     self.num_heads, self.pos_scaling)  # [1, H, T', T]
        cross_bias = split_heads_bias(self.cross_pos_q_linear(q_pos),
                                      self.cross_pos_k_linear(encoder_out.position_embeddings),
                                      self.num_heads, self.pos_scaling)  # [B|1, H, T', S]
        if encoder_out.padding_mask.any():
            cross_bias = cross_bias.masked_fill(encoder_out.padding_mask[:, None, None, :], float("-inf"))
        causal = torch.ones(T - start, T, dtype=torch.bool, device=device).triu(start + 1)  # [T', T]
        self_mask = causal[None, None]  # [1, 1, T', T]
        tgt_pad = prev_output_tokens.eq(self.pad)
        if tgt_pad.any():
            self_mask = self_mask | tgt_pad[:, None, None, :]  # [B, 1, T', T]
        bucket = self.token_rp_bucket[start:T, :T]  # [T', T]

        x = self.embed_tokens(new_tokens)  # [B, T', D]
        if not self.cfg.disable_entangle:
            # the original decoder adds raw positions unless --disable-entangle (every release sets it)
            x = x + tgt_pos[:, start:]
        x = self.layernorm_embedding(x)
        x = F.dropout(x, self.cfg.dropout, self.training)

        if cache is not None and "cross_kv" in cache:
            cross_kv = cache["cross_kv"]
        else:
            cross_kv = self._cross_kv(encoder_out)
        self_kv = cache.get("self_kv") if cache is not None else None
        new_self_kv = []
        inner_states = [x]
        for i, layer in enumerate(self.layers):
            rel = self.token_rel_pos_table_list[i](bucket).permute(2, 0, 1)[None]  # [1, H, T', T]
            bias = (self_bias + rel).masked_fill(self_mask, float("-inf"))
            x, kv = layer(x, self_kv[i] if self_kv else None, bias, cross_kv[i], cross_bias)
            new_self_kv.append(kv)
            inner_states.append(x)
        if cache is not None:
            cache["self_kv"] = new_self_kv
            cache["cross_kv"] = cross_kv
        x = self.layer_norm(x)
        if not features_only:
            x = self.output_projection(x)
        return x, {"attn": [None], "inner_states": inner_states if return_all_hiddens else inner_states}

    @staticmethod
    def reorder_cache(cache: dict[str, Any], new_order: torch.Tensor) -> None:
        """Reorder the cached keys/values of every layer by `new_order` (beam search), in place."""
        for name in ("self_kv", "cross_kv"):
            if name in cache:
                cache[name] = [(k.index_select(0, new_order), v.index_select(0, new_order))
                               for k, v in cache[name]]
