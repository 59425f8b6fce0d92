"""OFAModel: the fairseq model `ofa` and its architectures; the only model file that imports fairseq.

`Encoder` and `Decoder` are plain modules; here they become a `FairseqEncoder` and a
`FairseqIncrementalDecoder` (so fairseq's SequenceGenerator, fairseq-generate, checkpoint
averaging and ensembling work), without changing a single parameter name.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import typing
from dataclasses import field
from typing import Any, Optional

import torch
import torch.nn.functional as F
from fairseq.dataclass import FairseqDataclass
from fairseq.models import (FairseqEncoder, FairseqEncoderDecoderModel, FairseqIncrementalDecoder,
                            register_model, register_model_architecture)
from torch import nn

from .config import ARCHITECTURES, FIXED_OPTIONS, OFAConfig, check_saved_options, config_for_arch, config_from_options
from .decoder import CACHE_KEY, Decoder
from .embedding import TokenEmbedding
from .encoder import Encoder, EncoderOutput

logger = logging.getLogger(__name__)


class OFAEncoder(Encoder, FairseqEncoder):
    """`Encoder` as a FairseqEncoder."""

    def __init__(self, cfg: OFAConfig, dictionary, embed_tokens: nn.Embedding):
        FairseqEncoder.__init__(self, dictionary)  # runs nn.Module.__init__
        Encoder.__init__(self, cfg, embed_tokens)

    def reorder_encoder_out(self, encoder_out: EncoderOutput, new_order: torch.Tensor) -> EncoderOutput:
        return encoder_out.index_select(new_order)

    def max_positions(self) -> int:
        return self.cfg.max_source_positions


class OFADecoder(Decoder, FairseqIncrementalDecoder):
    """`Decoder` as a FairseqIncrementalDecoder (its cache lives in fairseq's incremental_state)."""

    def __init__(self, cfg: OFAConfig, dictionary, embed_tokens: nn.Embedding):
        FairseqIncrementalDecoder.__init__(self, dictionary)
        Decoder.__init__(self, cfg, embed_tokens)

    def reorder_incremental_state_scripting(self, incremental_state: dict[str, Any], new_order: torch.Tensor):
        if CACHE_KEY in incremental_state:
            Decoder.reorder_cache(incremental_state[CACHE_KEY], new_order)

    def max_positions(self) -> int:
        return self.cfg.max_target_positions


def init_bert_params(module: nn.Module) -> None:
    """BERT-style initialisation: N(0, 0.02) for linears/embeddings, zero biases and padding rows."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
        if module.padding_idx is not None:
            nn.init.zeros_(module.weight[module.padding_idx])


FROM_DICTIONARY = ("vocab_size", "pad")  # OFAConfig fields the task's dictionary sets, not an option


def _default_by_arch(name: str) -> str:
    """How an option that is not given gets its value: 'not given, by --arch: 4 (ofa_tiny, ofa_medium); ...'
    when the architectures differ, else 'default 1024'."""
    by_value: dict[Any, list[str]] = {}
    for arch, preset in ARCHITECTURES.items():
        by_value.setdefault(preset.get(name, OFAConfig.__dataclass_fields__[name].default), []).append(arch)
    if len(by_value) == 1:
        value = next(iter(by_value))
        return f"default {'on' if value else 'off'}" if isinstance(value, bool) else f"default {value!r}"
    return "not given, by --arch: " + "; ".join(f"{v!r} ({', '.join(archs)})" for v, archs in by_value.items())


def _model_options() -> list[tuple[str, Any, Any]]:
    """The fields of OFAModelConfig: the model's command-line / YAML options.

    Every OFAConfig field but the two the task's dictionary sets (vocab_size, pad) is Optional and
    None by default: None means "not given, the architecture's value", which the `--arch` / `_name`
    preset fills in (`_arch` below). fairseq's transformer keeps its presets on the command line by
    leaving the dataclass defaults out of argparse (`gen_parser_from_dataclass(..., delete_default=True)`,
    transformer_legacy.py), as `add_args` does here; but fairseq-hydra-train merges every dataclass
    default into the YAML's model before the architecture function runs, so a real default here
    would replace the preset (`_name: ofa_cn_large` would build base sizes). Then the original's
    switches that OFA-CN always has, and the freezing options that `build_model` reads.
    """
    types = typing.get_type_hints(OFAConfig)
    options = [(f.name, Optional[types[f.name]],
                field(default=None, metadata={"help": f"{f.metadata['help']}; {_default_by_arch(f.name)}"}))
               for f in dataclasses.fields(OFAConfig) if f.name not in FROM_DICTIONARY]
    # Accepted so that the original's training scripts run unchanged; left None when not given (=
    # OFA-CN's value) and checked by `check_saved_options`.
    options += [(name, Optional[type(value)], field(default=None, metadata={
        "help": f"the original OFA's option, accepted so that its scripts run unchanged: OFA-CN always has "
                f"{value!r}, another value is an error"})) for name, value in FIXED_OPTIONS.items()]
    options += [
        ("freeze_encoder_embedding", bool, field(default=False, metadata={
            "help": "do not train the one token embedding (shared by encoder, decoder and output projection); "
                    "the released caption configs set it"})),
        ("freeze_decoder_embedding", bool, field(default=False, metadata={
            "help": "the same as freeze_encoder_embedding (the embedding is shared); kept for the original's "
                    "scripts, which pass both"})),
        ("freeze_encoder", bool, field(default=False, metadata={
            "help": "train only the decoder: freezes every encoder parameter, image stem included, but the "
                    "shared token embedding (freeze that with freeze_encoder_embedding)"})),
    ]
    return options


# fairseq's config of the model `ofa` (`--arch`/`model._name` picks an architecture preset): what
# `fairseq-train --help`, hydra and a saved `cfg['model']` see. The help of each field is OFAConfig's.
OFAModelConfig = dataclasses.make_dataclass("OFAModelConfig", _model_options(), bases=(FairseqDataclass,))
OFAModelConfig.__module__ = __name__
OFAModelConfig.__doc__ = "The options of the fairseq model `ofa`: OFAConfig's fields (None = the architecture's value)."


@register_model("ofa", dataclass=OFAModelConfig)
class OFAModel(FairseqEncoderDecoderModel):
    """OFA-CN: a ResNet + transformer encoder over [image; text] and a text decoder.

    Built from an `OFAConfig`; `build_model` accepts fairseq's args (a Namespace from the command
    line or a released checkpoint, or a DictConfig from a YAML file).
    """

    def __init__(self, cfg: OFAConfig, encoder: OFAEncoder, decoder: OFADecoder):
        super().__init__(encoder, decoder)
        self.cfg = cfg
        self.classification_heads = nn.ModuleDict()  # empty; part of the released module tree

    @classmethod
    def add_args(cls, parser: argparse.ArgumentParser) -> None:
        """OFAModelConfig's fields as flags without defaults (so the `--arch` preset fills what is not
        given), plus `--no-x` for each OFAConfig switch, so that one that is on can be turned off."""
        super().add_args(parser)
        for f in dataclasses.fields(OFAConfig):
            if f.type in ("bool", bool):
                flag = f.name.replace("_", "-")
                parser.add_argument(f"--no-{flag}", dest=f.name, action="store_false", help=f"turn --{flag} off")

    @classmethod
    def config_from_args(cls, args: Any, vocab_size: int, pad: int) -> OFAConfig:
        """fairseq's model args -> OFAConfig, as fairseq's `TransformerConfig.from_namespace`: the args
        are a Namespace (command line, released checkpoint) or a DictConfig (YAML, our checkpoints)."""
        values = dict(vars(args)) if isinstance(args, argparse.Namespace) else dict(args)
        check_saved_options(values)
        return config_from_options(values, vocab_size=vocab_size, pad=pad)

    @classmethod
    def build_model(cls, args: Any, task) -> "OFAModel":
        dictionary = task.source_dictionary
        cfg = cls.config_from_args(args, vocab_size=len(dictionary), pad=dictionary.pad())
        model = cls.from_config(cfg, dictionary)
        options = dict(vars(args)) if isinstance(args, argparse.Namespace) else dict(args)
        model.freeze(encoder=bool(options.get("freeze_encoder")), resnet=cfg.freeze_resnet,
                     embeddings=bool(options.get("freeze_encoder_embedding") or options.get("freeze_decoder_embedding")))
        return model

    def freeze(self, encoder: bool = False, resnet: bool = False, embeddings: bool = False) -> None:
        """Stop training parts of the model.

        encoder: every encoder parameter except the token embedding, which the decoder shares;
        resnet: the image stem (its BatchNorm is already frozen by `freeze_resnet`);
        embeddings: the one token embedding (also the output projection).
        """
        if encoder:
            for name, p in self.encoder.named_parameters():
                if not name.startswith("embed_tokens."):
                    p.requires_grad_(False)
        if resnet or encoder:
            for p in self.encoder.embed_images.parameters():
                p.requires_grad_(False)
        if embeddings:
            self.encoder.embed_tokens.weight.requires_grad_(False)

    def compile_layers(self, backend: str = "inductor") -> None:
        """torch.compile the image stem and every transformer layer, in place (state-dict keys unchanged).

        Compiled code takes the plain paths (F.linear, conv + BatchNorm), which the compiler fuses
        itself, instead of the hand-written CPU ones; decoder layers compile for dynamic shapes
        (the cached prefix grows by one every decoding step). The first step of each new shape pays
        the compilation.
        """
        self.encoder.embed_images.compile(backend=backend)
        for layer in self.encoder.layers:
            layer.compile(backend=backend)
        for layer in self.decoder.layers:
            layer.compile(backend=backend, dynamic=True)

    @classmethod
    def from_config(cls, cfg: OFAConfig, dictionary=None) -> "OFAModel":
        embed_tokens = TokenEmbedding(cfg.vocab_size, cfg.encoder_embed_dim, padding_idx=cfg.pad)
        encoder = OFAEncoder(cfg, dictionary, embed_tokens)
        decoder = OFADecoder(cfg, dictionary, embed_tokens)
        model = cls(cfg, encoder, decoder)
        model.init_weights()
        return model

    def init_weights(self) -> None:
        """BERT init for the transformer; zero relative-position tables; kaiming for the ResNet."""
        for name, module in self.named_modules():
            if name.startswith("encoder.embed_images"):
                continue  # the ResNet keeps its own (kaiming) initialisation
            init_bert_params(module)
        for side in (self.encoder, self.decoder):
            for table in (*side.token_rel_pos_table_list, *side.image_rel_pos_table_list):
                nn.init.zeros_(table.weight)
        self.encoder.embed_images.init_weights()

    def forward(self, src_tokens, src_lengths, prev_output_tokens, patch_images=None, patch_masks=None,
                return_all_hiddens: bool = False, features_only: bool = False, sample_patch_num=None,
                code_masks=None, **unused):
        """Teacher-forced pass. -> (logits [B, T, V], extra)

        code_masks: [B] bool or None; True = the row's target is image codes (pretraining's image
        infilling), decoded with the image positions (see `Decoder.forward`).
        """
        output_weight = None  # made before the encoder's lookup: see TokenEmbedding.projection_weight
        embedding = self.decoder.embed_tokens
        if not features_only and isinstance(embedding, TokenEmbedding) \
                and self.decoder.output_projection.weight is embedding.weight:
            output_weight = embedding.projection_weight()
        encoder_out = self.encoder(src_tokens, src_lengths, patch_images=patch_images, patch_masks=patch_masks,
                                   return_all_hiddens=return_all_hiddens, sample_patch_num=sample_patch_num)
        logits, extra = self.decoder(prev_output_tokens, encoder_out=encoder_out, features_only=features_only,
                                     return_all_hiddens=return_all_hiddens, code_masks=code_masks,
                                     output_weight=output_weight)
        extra["encoder_out"] = encoder_out
        return logits, extra

    def get_normalized_probs(self, net_output, log_probs: bool, sample=None):
        logits = net_output[0].float()  # log-softmax in fp32, as the original
        return F.log_softmax(logits, dim=-1) if log_probs else F.softmax(logits, dim=-1)

    def max_positions(self):
        return (self.cfg.max_source_positions, self.cfg.max_target_positions)

    def upgrade_state_dict_named(self, state_dict, name):
        # Released checkpoints need no renaming; strict loading reports any difference.
        return state_dict

    def prepare_for_inference_(self, cfg):
        self.eval()


def _arch(name: str):
    def fill_defaults(args):
        # values present in args (command line, saved checkpoint) win over the preset
        preset = dataclasses.asdict(config_for_arch(name))
        for key, value in preset.items():
            if getattr(args, key, None) is None:
                setattr(args, key, value)
    register_model_architecture("ofa", name)(fill_defaults)


for _name in ARCHITECTURES:
    _arch(_name)
