"""OFAConfig: the architecture of an OFA-CN model. Defaults = the released `ofa_cn_base`.

Sizes live here and in the named presets below. Model options (a released checkpoint's saved
Namespace, our saved `cfg['model']`, the command line or a YAML) become an `OFAConfig` in one place,
`config_from_options`, which both `checkpoints.formats.model_config` and `OFAModel.config_from_args`
call. Each field's `help` is also its command-line help (ofa.py registers the fields with fairseq).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
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


def _option(default: Any, help: str) -> Any:
    """A config field with its command-line help (fairseq shows it under `fairseq-train --help`)."""
    return field(default=default, metadata={"help": help})


@dataclass
class OFAConfig:
    """Architecture of OFA-CN. Every field with a released-checkpoint default: the defaults build `ofa_cn_base`.

    The `help` of each field is also its command-line help (`OFAModelConfig` in ofa.py).
    """

    resnet_type: str = _option("resnet101", "image stem: a Bottleneck ResNet cut after layer3, one of "
                               "resnet18/34/50/101/152, or resnet10 (one block per stage, the demo's CPU size)")
    encoder_embed_dim: int = _option(768, "width D of the encoder: token and patch embeddings, attention and "
                                     "residual stream; equal to decoder_embed_dim (one shared token embedding) "
                                     "and divisible by encoder_attention_heads")
    decoder_embed_dim: int = _option(768, "width of the decoder; must equal encoder_embed_dim")
    encoder_ffn_embed_dim: int = _option(3072, "hidden size F of each encoder feed-forward block "
                                         "(4 x D in every released size)")
    decoder_ffn_embed_dim: int = _option(3072, "hidden size of each decoder feed-forward block "
                                         "(4 x D in every released size)")
    encoder_attention_heads: int = _option(12, "attention heads H per encoder layer; each head has D / H "
                                           "channels (64 in every released size but ofa_huge's 80)")
    decoder_attention_heads: int = _option(12, "attention heads per decoder layer (self- and cross-attention)")
    encoder_layers: int = _option(6, "transformer layers in the encoder")
    decoder_layers: int = _option(6, "transformer layers in the decoder")
    vocab_size: int = _option(30325, "rows of the one tied token embedding; the model takes it from the "
                              "task's dictionary (30,325 for OFA-CN), so it is not a command-line option")
    pad: int = _option(1, "padding id; the model takes it from the task's dictionary (1)")
    max_source_positions: int = _option(1024, "longest encoder text input, in tokens: sizes the encoder's "
                                        f"absolute position table (this + {POSITION_TABLE_EXTRA} rows)")
    max_target_positions: int = _option(1024, "longest decoder input, in tokens: sizes the decoder's "
                                        f"absolute position table (this + {POSITION_TABLE_EXTRA} rows)")
    token_bucket_size: int = _option(256, "text relative positions: distances up to half of this get a bucket "
                                     "each, longer ones share logarithmic buckets; each layer learns "
                                     "2 x this - 1 biases per head")
    image_bucket_size: int = _option(42, f"side of the image-patch grid that has positions, in patches of "
                                     f"{PATCH_STRIDE} px (42 = 672 px): sizes the image position "
                                     "table and the image relative-position buckets")
    attn_scale_factor: float = _option(2.0, "queries are scaled by (head size x this) ** -0.5 instead of "
                                       "head size ** -0.5")
    code_image_size: int = _option(128, "image size in px whose 8 x 8 px codes the decoder can generate "
                                   "(pretraining's image infilling); only sizes decoder.image_position_idx")

    # Switches that change the state-dict keys; all on (scale_resids off) in released checkpoints.
    scale_attn: bool = _option(True, "LayerNorm after each attention, before its output projection "
                               "(attn_ln, self_attn_ln, cross_attn_ln); on in every released checkpoint")
    scale_fc: bool = _option(True, "LayerNorm inside each feed-forward block, over its F hidden channels "
                             "(ffn_layernorm); on in every released checkpoint")
    scale_heads: bool = _option(True, "learned per-head scale of the attention output (c_attn); "
                                "on in every released checkpoint")
    scale_resids: bool = _option(False, "learned per-channel scale of each residual (w_resid); "
                                 "off in every released checkpoint")
    add_type_embedding: bool = _option(True, "add a learned type embedding to every encoder input "
                                       "(0 = text, 1 = image patch); on in every released checkpoint")
    # The original decoder adds raw positions to its input unless `disable_entangle`.
    disable_entangle: bool = _option(True, "do not add the absolute position embeddings to the decoder's input "
                                     "tokens (they only enter through the attention biases); on in every "
                                     "released checkpoint")
    entangle_position_embedding: bool = _option(False, "add the absolute position embeddings to the encoder's "
                                                "input tokens and patches; off in the released checkpoints, "
                                                "on in the demo configs (grounding and OCR need where a patch is)")
    freeze_resnet: bool = _option(False, "FrozenBatchNorm2d in the image stem: fixed BatchNorm statistics and "
                                  "affine, no num_batches_tracked in the state dict, stem not trained")

    dropout: float = _option(0.0, "dropout probability (0-1) on the embeddings and on each layer's attention "
                             "and feed-forward outputs; the released fine-tuning configs use 0.1 (0.0 for SCST)")
    attention_dropout: float = _option(0.0, "dropout probability (0-1) on the attention weights "
                                       "(0.0 in every released config)")
    activation_dropout: float = _option(0.0, "dropout probability (0-1) after the feed-forward activation")
    encoder_drop_path_rate: float = _option(0.0, "stochastic depth in the encoder: probability (0-1) of "
                                            "skipping a layer's residual branches, rising linearly from 0 at the "
                                            "first layer to this at the last (released configs: 0.1, 0.2 for "
                                            "large grounding)")
    decoder_drop_path_rate: float = _option(0.0, "stochastic depth in the decoder, as encoder_drop_path_rate")
    resnet_drop_path_rate: float = _option(0.0, "stochastic depth in the image stem: probability (0-1) of "
                                           "skipping a block, rising linearly from 0 to this within each stage "
                                           "(0.0 in every released config)")

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


def config_from_options(values: Mapping[str, Any], **overrides: Any) -> OFAConfig:
    """OFAConfig from model options: a released checkpoint's saved `args`, our saved `cfg['model']`,
    or the command line / YAML.

    The architecture's preset (`arch`, or hydra's `_name`; ofa_cn_base when neither is given) is the
    base; every value in `values` that is not None wins over it, and `overrides` win over both.
    A name that is no architecture (fairseq's model name `ofa`) starts from the OFAConfig defaults.
    Unknown option names are ignored. Check the options first with `check_saved_options`.
    """
    arch = values.get("arch") or values.get("_name") or "ofa_cn_base"
    base = config_for_arch(arch) if arch in ARCHITECTURES else OFAConfig()
    return OFAConfig.from_mapping({**values, **overrides}, base=base)
