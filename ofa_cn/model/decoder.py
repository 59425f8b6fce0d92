"""The OFA decoder: token embeddings + position biases -> decoder stack -> tied logits.

Decoding starts from bos (id 0). Positions, as in the encoder, only enter as attention biases:

    self bias_l  = q_p k_p^T (target positions)          + token_rel_l[bucket(i - j)]
    cross bias   = q_p (target) . k_p (encoder positions)  (same for every layer)

Step-by-step decoding keeps a cache: per layer the self-attention keys/values of the prefix; the
position keys of the prefix; and a `CrossMemory` with what every step reads from the encoder
output (cross-attention keys/values, position keys, padding), computed at the first step once per
distinct encoder row, since beam search repeats each sentence's row beam times.

Rows whose target is VQGAN image codes (`code_masks`, the original's image-infilling pretraining
objective) use the image variants instead: positions `embed_image_positions(image_position_idx)`
normalised by `image_pos_ln`, the `image_rel_l` tables over image buckets, and
`code_layernorm_embedding`. Only teacher-forced (full) passes support them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import MAX_POSITION_BUCKETS, POSITION_TABLE_EXTRA, linear_rates, OFAConfig
from .encoder import EncoderOutput, split_heads
from .fast_paths import get_fast_paths
from .layers import DecoderLayer
from .linear import Linear
from .positions import decoder_image_position_table, image_bucket_table, num_image_buckets, token_bucket_table

CACHE_KEY = "ofa_decoder_cache"


@dataclass
class CrossMemory:
    """What every decoding step reads from the encoder output, computed once.

    kv: per layer, the cross-attention keys/values of U distinct encoder rows, two [U, H, S, d].
    pos_k: the encoder positions' keys of the cross position bias, per head [U or 1, H, S, d].
    pad: [U, S] bool, True = padding; None when no row has any.
    rows: [R] the row of kv that each decoder row reads, or None when decoder row r reads row r.
    """

    kv: list[tuple[torch.Tensor, torch.Tensor]]
    pos_k: torch.Tensor
    pad: torch.Tensor | None
    rows: torch.Tensor | None = None

    def reorder(self, order: torch.Tensor) -> None:
        """Decoder row r now continues row order[r] (beam search). Copies nothing."""
        self.rows = order if self.rows is None else self.rows.index_select(0, order)

    def _keep(self, keep: torch.Tensor) -> None:
        self.kv = [(k.index_select(0, keep), v.index_select(0, keep)) for k, v in self.kv]
        if self.pos_k.size(0) != 1:
            self.pos_k = self.pos_k.index_select(0, keep)
        if self.pad is not None:
            self.pad = self.pad.index_select(0, keep)

    def regroup(self, allow_groups: bool = True) -> int:
        """Rearrange kv, pos_k and pad (in place) so that the layers can read them without `rows`.

        After the call, decoder rows [u*g, (u+1)*g) all read kv row u, and g is returned (1 = row
        r reads row r). Beam search keeps that grouped layout (beams stay within their sentence;
        finished sentences are dropped, and then so are their rows here). Any other order of rows,
        or groups when `allow_groups` is False, copies the keys/values out to one row per decoder
        row, after which the memory stays ungrouped.
        """
        if self.rows is None:
            return 1
        rows = self.rows.tolist()  # one host copy of R ints per step
        g = next((i for i, r in enumerate(rows) if r != rows[0]), len(rows))
        distinct = rows[::g]
        grouped = (len(rows) % g == 0 and len(set(distinct)) == len(distinct)
                   and rows == [u for u in distinct for _ in range(g)])
        if not grouped or (g > 1 and not allow_groups):
            self._keep(self.rows)
            self.rows = None
            return 1
        if distinct != list(range(self.kv[0][0].size(0))):
            self._keep(torch.tensor(distinct, device=self.rows.device))
        self.rows = None if g == 1 else torch.arange(len(distinct), device=self.rows.device).repeat_interleave(g)
        return g


class CrossInputs(NamedTuple):
    """What the decoder layers and the cross position bias read from the encoder in one call."""

    per_layer: list  # per layer: (keys, values) from a CrossMemory, or the encoder output [B, S, D]
    pos_k: torch.Tensor  # [U|B|1, H, S, d] the encoder positions' keys of the cross position bias
    pad: torch.Tensor | None  # [U|B, S] bool, True = padding; None when no row has any
    group: int  # decoder rows per row of `per_layer` (see `CrossMemory.regroup`)


class CodeRows(NamedTuple):
    """The image-code rows' (code_masks) replacements for the text rows' positions; full passes only."""

    rows: torch.Tensor  # [B] bool, True = the row's target is image codes
    pos: torch.Tensor  # [1, T, D] raw image-code positions
    self_bias: torch.Tensor  # [1, H, T, T] q_p k_p^T of the image-code positions
    bucket: torch.Tensor  # [T, T] image relative-position buckets


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
        # image-code target rows only (code_masks; pretraining)
        self.embed_image_positions = nn.Embedding(cfg.image_bucket_size ** 2 + 1, D)
        self.pos_ln = nn.LayerNorm(D)  # target positions
        self.image_pos_ln = nn.LayerNorm(D)  # image-code positions (code_masks rows)
        self.pos_scaling = (D / H * cfg.attn_scale_factor) ** -0.5
        self.self_pos_q_linear = Linear(D, D)
        self.self_pos_k_linear = Linear(D, D)
        self.cross_pos_q_linear = Linear(D, D)
        self.cross_pos_k_linear = Linear(D, D)
        self.code_layernorm_embedding = nn.LayerNorm(D)  # embeddings of image-code rows (code_masks)
        rates = linear_rates(cfg.decoder_drop_path_rate, cfg.decoder_layers)
        self.layers = nn.ModuleList(DecoderLayer(cfg, r) for r in rates)
        self.layer_norm = nn.LayerNorm(D)  # after the last layer
        self.output_projection = Linear(D, embed_tokens.num_embeddings, bias=False)
        self.output_projection.weight = embed_tokens.weight  # tied
        # On CPU the biggest product of a decoding step; a oneDNN-packed copy (V x D floats) spares
        # it the weight reorder every step (as each DecoderLayer does for its step products). The
        # encoder's linears stay plain: one pass over many rows, where a reorder costs little.
        self.output_projection.pack_weight = True
        self.token_rel_pos_table_list = nn.ModuleList(
            nn.Embedding(2 * cfg.token_bucket_size - 1, H) for _ in range(cfg.decoder_layers))
        self.image_rel_pos_table_list = nn.ModuleList(
            nn.Embedding(num_image_buckets(cfg.image_bucket_size), H) for _ in range(cfg.decoder_layers))

    def max_positions(self) -> int:
        return self.cfg.max_target_positions

    def _cross_kv(self, encoder_out: EncoderOutput) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [layer.encoder_attn.project_kv(encoder_out.out) for layer in self.layers]

    def _encoder_positions(self, encoder_out: EncoderOutput) -> tuple[torch.Tensor, torch.Tensor | None]:
        """-> the encoder positions' keys of the cross bias [B|1, H, S, d], and padding [B, S] or None."""
        pad = encoder_out.padding_mask if encoder_out.padding_mask.any() else None
        pos_k = split_heads(self.cross_pos_k_linear(encoder_out.position_embeddings), self.num_heads)
        return pos_k, pad

    def _cross_memory(self, encoder_out: EncoderOutput) -> CrossMemory:
        """Cross keys/values of each distinct row of the encoder output (its `source` if repeated)."""
        source, rows = encoder_out, None
        if encoder_out.source is not None:
            source, rows = encoder_out.source, encoder_out.source_rows
        pos_k, pad = self._encoder_positions(source)
        return CrossMemory(self._cross_kv(source), pos_k, pad, rows)

    def _cross_inputs(self, encoder_out: EncoderOutput, cache: dict[str, Any] | None, new: int) -> CrossInputs:
        """The cross-attention inputs of this call for `new` new positions.

        Step by step (with the `cross_memory` fast path): the cache's CrossMemory, made at the
        first step. Otherwise the encoder output itself, which each layer projects (or folds).
        """
        if cache is not None and get_fast_paths().cross_memory:
            if "cross" not in cache:
                cache["cross"] = self._cross_memory(encoder_out)
            memory: CrossMemory = cache["cross"]
            group = memory.regroup(allow_groups=new == 1)
            return CrossInputs(memory.kv, memory.pos_k, memory.pad, group)
        pos_k, pad = self._encoder_positions(encoder_out)
        return CrossInputs([encoder_out.out] * len(self.layers), pos_k, pad, 1)

    def _self_position_bias(self, q_pos: torch.Tensor, T: int, cache: dict[str, Any] | None) -> torch.Tensor:
        """q_pos [1, T', D] normalised positions start..T-1 -> [1, H, T', T] (q_p k_p^T)."""
        H, start = self.num_heads, T - q_pos.size(1)
        k_new = self.self_pos_k_linear(q_pos)  # [1, T', D]
        keep = cache is not None and get_fast_paths().incremental_self_bias  # cache the prefix's keys
        cached = cache.get("self_pos_k") if keep else None
        if start == 0:
            k = split_heads(k_new, H)
        elif cached is not None and cached.size(2) == start:
            k = torch.cat([cached, split_heads(k_new, H)], dim=2)  # [1, H, T, d]
        else:  # recompute the keys of the whole prefix
            all_pos = self.pos_ln(self.embed_positions(torch.arange(T, device=q_pos.device)))[None]
            k = split_heads(self.self_pos_k_linear(all_pos), H)
        if keep:
            cache["self_pos_k"] = k
        q = split_heads(self.self_pos_q_linear(q_pos), H) * self.pos_scaling
        return torch.matmul(q, k.transpose(-1, -2))

    def _cross_position_bias(self, q_pos: torch.Tensor, pos_k: torch.Tensor,
                             pad: torch.Tensor | None) -> torch.Tensor:
        """q_pos [1, T', D]; pos_k [B|1, H, S, d]; pad [B, S] or None -> [B|1, H, T', S]"""
        q = split_heads(self.cross_pos_q_linear(q_pos), self.num_heads) * self.pos_scaling
        bias = torch.matmul(q, pos_k.transpose(-1, -2))
        if pad is not None:
            bias = bias.masked_fill(pad[:, None, None, :], float("-inf"))
        return bias

    def _code_rows(self, code_masks: torch.Tensor | None, B: int, T: int,
                   incremental: bool) -> torch.Tensor | None:
        """code_masks [B] bool -> the same mask, or None when no row is image codes (the text path)."""
        if code_masks is None:
            return None
        if code_masks.shape != (B,) or code_masks.dtype != torch.bool:
            raise ValueError(f"code_masks must be a [B] = [{B}] bool tensor (True = the row's target is "
                             f"image codes), got {code_masks.dtype} of shape {tuple(code_masks.shape)}")
        if not code_masks.any():
            return None
        if incremental:
            raise NotImplementedError(
                "step-by-step decoding of image-code rows (code_masks) is not supported: OFA-CN does not "
                "generate images; use code_masks only in teacher-forced passes (incremental_state=None)")
        ids = self.image_position_idx
        usable = int((ids < self.embed_image_positions.num_embeddings).long().cumprod(0).sum())
        if T > usable:
            raise ValueError(
                f"image-code rows (code_masks) need a target of at most {usable} positions (bos + the "
                f"(code_image_size / 8)^2 codes, then whatever `image_position_idx` ids fit "
                f"image_bucket_size {self.cfg.image_bucket_size}), got {T}; shorten the batch's targets")
        return code_masks

    def forward(self, prev_output_tokens: torch.Tensor, encoder_out: EncoderOutput,
                incremental_state: dict[str, Any] | None = None, features_only: bool = False,
                return_all_hiddens: bool = False, code_masks: torch.Tensor | None = None,
                output_weight: torch.Tensor | None = None, **unused):
        """Decode.

        Args:
            prev_output_tokens: [B, T] the target shifted right, starting with bos; when
                decoding step by step, the whole prefix (only its last position is computed).
            encoder_out: the encoder's output for the same rows.
            incremental_state: a dict that holds this decoder's cache between steps, or None for
                a full (teacher-forced) pass.
            features_only: return hidden states [B, T, D] instead of logits.
            code_masks: [B] bool, True = the row's target is image codes (image infilling); those
                rows use the image positions, biases and embedding norm. None = all text.
            output_weight: the output projection's weight as the caller's autograd should see it
                (an alias of the tied embedding, `TokenEmbedding.projection_weight`); None: its own.
        Returns:
            logits [B, T', V] (T' = 1 when incremental) and {"attn": [None], "inner_states": [...]}.
        Raises:
            NotImplementedError: a True in code_masks while decoding step by step.
        """
        B, T = prev_output_tokens.shape
        device = prev_output_tokens.device
        codes = self._code_rows(code_masks, B, T, incremental_state is not None)  # [B] bool or None
        cache = None
        if incremental_state is not None:
            cache = incremental_state.setdefault(CACHE_KEY, {})
        start = 0 if cache is None or "self_kv" not in cache else cache["self_kv"][0][0].size(2)
        new_tokens = prev_output_tokens[:, start:]  # [B, T'] the positions to compute now

        new_pos = self.embed_positions(torch.arange(start, T, device=device))[None]  # [1, T', D] raw positions
        q_pos = self.pos_ln(new_pos)  # [1, T', D]
        self_bias = self._self_position_bias(q_pos, T, cache)  # [1, H, T', T]
        cross = self._cross_inputs(encoder_out, cache, new_tokens.size(1))
        cross_bias = self._cross_position_bias(q_pos, cross.pos_k, cross.pad)  # [U|B|1, H, T', S]
        code = None
        if codes is not None:  # full pass only (checked above): start = 0, T' = T
            code, code_cross_bias = self._code_positions(codes, T, cross.pos_k, cross.pad)
            cross_bias = torch.where(codes[:, None, None, None], code_cross_bias, cross_bias)  # [B, H, T, S]
        self_mask = self._self_mask(prev_output_tokens, start)  # [B|1, 1, T', T] or None
        bucket = self.token_rp_bucket[start:T, :T]  # [T', T]

        x = self._embed(new_tokens, new_pos, code)  # [B, T', D]
        self_kv = cache.get("self_kv") if cache is not None else None
        new_self_kv = []
        inner_states = [x]
        for i, layer in enumerate(self.layers):
            bias = self._layer_self_bias(i, self_bias, bucket, code, self_mask)  # [B|1, H, T', T]
            x, kv = layer(x, self_kv[i] if self_kv else None, bias, cross.per_layer[i], cross_bias, cross.group)
            new_self_kv.append(kv)
            inner_states.append(x)
        if cache is not None:
            cache["self_kv"] = new_self_kv
        x = self.layer_norm(x)
        if not features_only:
            x = self.output_projection(x, weight=output_weight)
        return x, {"attn": [None], "inner_states": inner_states}  # embeddings + every layer, before the final norm

    def _code_positions(self, codes: torch.Tensor, T: int, pos_k: torch.Tensor,
                        pad: torch.Tensor | None) -> tuple[CodeRows, torch.Tensor]:
        """Positions of image-code rows (a full pass of T positions). -> CodeRows and their cross
        position bias [B|1, H, T, S] (pos_k, pad: the encoder side, as for the text rows)."""
        image_idx = self.image_position_idx[:T]  # [T]
        code_pos = self.embed_image_positions(image_idx)[None]  # [1, T, D] raw image positions
        code_q_pos = self.image_pos_ln(code_pos)
        code_self_bias = self._self_position_bias(code_q_pos, T, None)  # [1, H, T, T]
        code_cross_bias = self._cross_position_bias(code_q_pos, pos_k, pad)  # [B|1, H, T, S]
        image_bucket = self.image_rp_bucket[image_idx][:, image_idx]  # [T, T]
        return CodeRows(codes, code_pos, code_self_bias, image_bucket), code_cross_bias

    def _self_mask(self, prev_output_tokens: torch.Tensor, start: int) -> torch.Tensor | None:
        """True where position start + i must not see key j: later positions and padding.
        -> [B|1, 1, T', T] bool, or None when nothing is masked."""
        T = prev_output_tokens.size(1)
        self_mask = None
        if T - start > 1:  # a single new position sees every earlier one
            self_mask = torch.ones(T - start, T, dtype=torch.bool,
                                   device=prev_output_tokens.device).triu(start + 1)[None, None]
        tgt_pad = prev_output_tokens.eq(self.pad)
        if tgt_pad.any():
            pad_mask = tgt_pad[:, None, None, :]  # [B, 1, 1, T]
            self_mask = pad_mask if self_mask is None else self_mask | pad_mask  # [B|1, 1, T', T]
        return self_mask

    def _embed(self, new_tokens: torch.Tensor, new_pos: torch.Tensor, code: CodeRows | None) -> torch.Tensor:
        """new_tokens [B, T'], raw positions new_pos [1, T', D] -> the first layer's input [B, T', D]."""
        x = self.embed_tokens(new_tokens)  # [B, T', D]
        rows = None if code is None else code.rows[:, None, None]  # [B, 1, 1]
        if not self.cfg.disable_entangle:
            # the original decoder adds raw positions unless --disable-entangle (every release sets it)
            x = x + (new_pos if code is None else torch.where(rows, code.pos, new_pos))
        if code is None:
            x = self.layernorm_embedding(x)
        else:
            x = torch.where(rows, self.code_layernorm_embedding(x), self.layernorm_embedding(x))
        return F.dropout(x, self.cfg.dropout, self.training)

    def _layer_self_bias(self, i: int, self_bias: torch.Tensor, bucket: torch.Tensor, code: CodeRows | None,
                         self_mask: torch.Tensor | None) -> torch.Tensor:
        """Layer i's self-attention bias: the shared position term plus the layer's relative term
        (image variants on image-code rows), -inf where masked. -> [B|1, H, T', T]"""
        rel = self.token_rel_pos_table_list[i](bucket).permute(2, 0, 1)[None]  # [1, H, T', T]
        bias = self_bias + rel
        if code is not None:
            code_rel = self.image_rel_pos_table_list[i](code.bucket).permute(2, 0, 1)[None]  # [1, H, T, T]
            bias = torch.where(code.rows[:, None, None, None], code.self_bias + code_rel, bias)  # [B, H, T, T]
        if self_mask is not None:
            bias = bias.masked_fill(self_mask, float("-inf"))
        return bias

    @staticmethod
    def reorder_cache(cache: dict[str, Any], new_order: torch.Tensor) -> None:
        """Follow beam search's new row order `new_order` [R'] in place (self keys/values are copied)."""
        if "self_kv" in cache:
            cache["self_kv"] = [(k.index_select(0, new_order), v.index_select(0, new_order))
                                for k, v in cache["self_kv"]]
        if "cross" in cache:
            cache["cross"].reorder(new_order)
