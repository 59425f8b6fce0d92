"""OFAConfig: the architecture of an OFA-CN model. Defaults = the released `ofa_cn_base`.

Sizes live here and in the named presets below; the saved `cfg['model']` Namespace of a released
checkpoint is turned into an `OFAConfig` once, by `checkpoint.model_config` (through
`OFAConfig.from_mapping`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

# Bottleneck blocks in layer1..layer3 of the truncated ResNet (no layer4). resnet34 and
# resnet50 share one layout in the original, which only ever builds Bottleneck blocks.
RESNET_LAYERS = {
    "resnet10": (1, 1, 1),  # not released: the demo's CPU-sized stem
    "resnet18": (2, 2, 2),
    "resnet34": (3, 4, 6),
    "resnet50": (3, 4, 6),
    "resnet101": (3, 4, 23),
    "resnet152": (3, 8, 36),
}
RESNET_OUT_CHANNELS = 1024  # layer3 of a Bottleneck ResNet: 256 planes x expansion 4
PATCH_STRIDE = 16  # stem (4) x layer2 (2) x layer3 (2): one image token per 16x16 pixels
MAX_POSITION_BUCKETS = 1024  # token_rp_bucket is built for 1024 positions whatever max_*_positions says
POSITION_TABLE_EXTRA = 2  # embed_positions has max_positions + 2 rows (fairseq's padding offset, unused)


@dataclass
class OFAConfig:
    """Architecture of OFA-CN. Every field with a released-checkpoint default."""

    resnet_type: str = "resnet101"  # image stem; see RESNET_LAYERS
    encoder_embed_dim: int = 768  # D
    decoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072  # F
    decoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12  # H
    decoder_attention_heads: int = 12
    encoder_layers: int = 6
    decoder_layers: int = 6
    vocab_size: int = 30325  # rows of the one tied token embedding
    pad: int = 1  # padding id of the dictionary
    max_source_positions: int = 1024
    max_target_positions: int = 1024
    token_bucket_size: int = 256  # relative-position buckets for text: 2*256-1 per layer
    image_bucket_size: int = 42  # image grid side covered by position ids (<= 672 px)
    attn_scale_factor: float = 2.0  # attention scale = (d_head * factor) ** -0.5
    code_image_size: int = 128  # only sizes decoder.image_position_idx (image-code generation)

    # Switches that change the state-dict keys; all on (scale_resids off) in released checkpoints.
    scale_attn: bool = True  # LayerNorm after each attention (attn_ln, self_attn_ln, cross_attn_ln)
    scale_fc: bool = True  # LayerNorm inside the FFN, over F (ffn_layernorm)
    scale_heads: bool = True  # learned per-head output scale (c_attn)
    scale_resids: bool = False  # learned per-channel residual scale (w_resid)
    add_type_embedding: bool = True  # type 0 = text, 1 = image patch
    # The original decoder adds raw positions to its input unless `disable_entangle`.
    disable_entangle: bool = True
    entangle_position_embedding: bool = False  # encoder: add raw positions to the tokens
    freeze_resnet: bool = False  # FrozenBatchNorm2d in the stem (no num_batches_tracked)

    dropout: float = 0.0
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    encoder_drop_path_rate: float = 0.0
    decoder_drop_path_rate: float = 0.0
    resnet_drop_path_rate: float = 0.0

    @property
    def resnet_layers(self) -> tuple[int, int, int]:
        if self.resnet_type not in RESNET_LAYERS:
            raise ValueError(
                f"resnet_type {self.resnet_type!r} is not one of {sorted(RESNET_LAYERS)}"
            )
        return RESNET_LAYERS[self.resnet_type]

    def __post_init__(self):
        for side in ("encoder", "decoder"):
            dim = getattr(self, f"{side}_embed_dim")
            heads = getattr(self, f"{side}_attention_heads")
            if dim % heads:
                raise ValueError(f"{side}_embed_dim {dim} is not divisible by {side}_attention_heads {heads}")
        if self.encoder_embed_dim != self.decoder_embed_dim:
            raise ValueError(
                "OFA shares one token embedding between encoder and decoder, so "
                f"encoder_embed_dim ({self.encoder_embed_dim}) must equal decoder_embed_dim ({self.decoder_embed_dim})"
            )
        self.resnet_layers  # validates resnet_type

    def replace(self, **overrides: Any) -> "OFAConfig":
        return dataclasses.replace(self, **overrides)

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], base: "OFAConfig | None" = None) -> "OFAConfig":
        """A config from saved fields; unknown names are ignored, missing ones come from `base`."""
        base = base or cls()
        known = {k: v for k, v in values.items() if k in cls.field_names() and v is not None}
        return dataclasses.replace(base, **known)


# Named architectures: the sizes of each. Every other field keeps its OFAConfig default.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "ofa_tiny": dict(resnet_type="resnet50", encoder_embed_dim=256, decoder_embed_dim=256,
                     encoder_ffn_embed_dim=1024, decoder_ffn_embed_dim=1024,
                     encoder_attention_heads=4, decoder_attention_heads=4,
                     encoder_layers=4, decoder_layers=4),
    "ofa_medium": dict(resnet_type="resnet101", encoder_embed_dim=512, decoder_embed_dim=512,
                       encoder_ffn_embed_dim=2048, decoder_ffn_embed_dim=2048,
                       encoder_attention_heads=8, decoder_attention_heads=8,
                       encoder_layers=4, decoder_layers=4),
    "ofa_base": dict(resnet_type="resnet101", encoder_embed_dim=768, decoder_embed_dim=768,
                     encoder_ffn_embed_dim=3072, decoder_ffn_embed_dim=3072,
                     encoder_attention_heads=12, decoder_attention_heads=12,
                     encoder_layers=6, decoder_layers=6),
    "ofa_large": dict(resnet_type="resnet152", encoder_embed_dim=1024, decoder_embed_dim=1024,
                      encoder_ffn_embed_dim=4096, decoder_ffn_embed_dim=4096,
                      encoder_attention_heads=16, decoder_attention_heads=16,
                      encoder_layers=12, decoder_layers=12),
    "ofa_huge": dict(resnet_type="resnet152", encoder_embed_dim=1280, decoder_embed_dim=1280,
                     encoder_ffn_embed_dim=5120, decoder_ffn_embed_dim=5120,
                     encoder_attention_heads=16, decoder_attention_heads=16,
                     encoder_layers=24, decoder_layers=12),
    # A small model that trains in minutes on a CPU (the demo); not a released size.
    "ofa_cn_demo": dict(resnet_type="resnet10", encoder_embed_dim=192, decoder_embed_dim=192,
                        encoder_ffn_embed_dim=512, decoder_ffn_embed_dim=512,
                        encoder_attention_heads=4, decoder_attention_heads=4,
                        encoder_layers=3, decoder_layers=3),
}
ARCHITECTURES["ofa_cn_base"] = ARCHITECTURES["ofa_base"]
ARCHITECTURES["ofa_cn_large"] = ARCHITECTURES["ofa_large"]


# Options of the original that would change the maths, with the only value OFA-CN builds. The
# command line accepts each under the original's flag (`--encoder-normalize-before`, ...), so the
# released training scripts run unchanged; a saved config or flag with another value is refused.
FIXED_OPTIONS = {
    "encoder_normalize_before": True, "decoder_normalize_before": True,
    "share_all_embeddings": True, "share_decoder_input_output_embed": True,
    "no_scale_embedding": True, "layernorm_embedding": True, "patch_layernorm_embedding": True,
    "code_layernorm_embedding": True,
    "activation_fn": "gelu", "sync_bn": False, "encoder_prompt": False, "decoder_prompt": False,
    "adaptive_input": False,
}


def check_saved_options(values: Mapping[str, Any]) -> None:
    """Refuse model options that no released OFA-CN checkpoint uses (we do not build them).

    An option that is absent or None (a flag not given on the command line) takes OFA-CN's value.
    """
    bad = {k: values[k] for k, want in FIXED_OPTIONS.items() if values.get(k) is not None and values[k] != want}
    if bad:
        expected = {k: FIXED_OPTIONS[k] for k in bad}
        raise ValueError(
            f"model options {bad} are not supported: every released OFA-CN checkpoint has {expected}, "
            "and OFA-CN builds only that architecture. Leave these options out (or give the released values); "
            "a checkpoint saved with them was trained with another architecture than OFA-CN."
        )


def linear_rates(rate: float, n: int) -> list[float]:
    """Stochastic-depth rates rising linearly from 0 to `rate` over n blocks (plain floats, so a
    model can be built on the meta device)."""
    return [rate * i / (n - 1) for i in range(n)] if n > 1 else [0.0] * n


def config_for_arch(arch: str, **overrides: Any) -> OFAConfig:
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown OFA architecture {arch!r}; known: {sorted(ARCHITECTURES)}")
    return OFAConfig(**{**ARCHITECTURES[arch], **overrides})
