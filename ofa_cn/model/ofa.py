"""OFAModel: the fairseq model `ofa` and its architectures; the only model file that imports fairseq.

`Encoder` and `Decoder` are plain modules; here they become a `FairseqEncoder` and a
`FairseqIncrementalDecoder` (so fairseq's SequenceGenerator, fairseq-generate, checkpoint
averaging and ensembling work), without changing a single parameter name.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from typing import Any

import torch
import torch.nn.functional as F
from fairseq.models import (FairseqEncoder, FairseqEncoderDecoderModel, FairseqIncrementalDecoder,
                            register_model, register_model_architecture)
from torch import nn

from .config import ARCHITECTURES, FIXED_OPTIONS, OFAConfig, check_saved_options, config_for_arch
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


# Command-line flags: every OFAConfig field, as --kebab-case. Booleans get --x / --no-x.
_HELP = {
    "resnet_type": "image stem: resnet18/34/50/101/152 (layer1..3 only)",
    "scale_attn": "LayerNorm after every attention (released: on)",
    "scale_fc": "LayerNorm inside every FFN (released: on)",
    "scale_heads": "learned per-head attention output scale (released: on)",
    "scale_resids": "learned residual scale (released: off)",
    "disable_entangle": "do not add raw positions to the decoder input (released: on)",
    "freeze_resnet": "FrozenBatchNorm2d in the image stem",
}


@register_model("ofa")
class OFAModel(FairseqEncoderDecoderModel):
    """OFA-CN: a ResNet + transformer encoder over [image; text] and a text decoder.

    Built from an `OFAConfig`; `build_model` accepts fairseq's args (a Namespace from the command
    line or a released checkpoint, or a DictConfig from a YAML file).
    """

    def __init__(self, cfg: OFAConfig, encoder: OFAEncoder, decoder: OFADecoder):
        super().__init__(encoder, decoder)
        self.cfg = cfg
        self.classification_heads = nn.ModuleDict()  # empty; part of the released module tree

    @staticmethod
    def add_args(parser: argparse.ArgumentParser) -> None:
        for f in dataclasses.fields(OFAConfig):
            flag = "--" + f.name.replace("_", "-")
            help_ = _HELP.get(f.name, f.name.replace("_", " "))
            if f.type in ("bool", bool):
                parser.add_argument(flag, dest=f.name, action="store_true", help=help_)
                parser.add_argument("--no-" + flag[2:], dest=f.name, action="store_false")
            else:
                kind = {"int": int, "float": float, "str": str}[str(f.type)]
                parser.add_argument(flag, dest=f.name, type=kind, metavar="N" if kind is not str else "S", help=help_)
        # The original's switches that OFA-CN always has: accepted so that its training scripts run
        # unchanged, left None when not given (= OFA-CN's value) and checked in `config_from_args`.
        for name, value in FIXED_OPTIONS.items():
            flag = "--" + name.replace("_", "-")
            help_ = f"the original's option; OFA-CN always has {value!r} (another value is an error)"
            if isinstance(value, bool):
                parser.add_argument(flag, dest=name, action="store_true", default=None, help=help_)
            else:
                parser.add_argument(flag, dest=name, type=type(value), default=None, help=help_)
        parser.add_argument("--freeze-encoder-embedding", action="store_true",
                            help="do not train the (shared) token embedding through the encoder")
        parser.add_argument("--freeze-decoder-embedding", action="store_true",
                            help="do not train the (shared) token embedding through the decoder")
        parser.add_argument("--freeze-encoder", action="store_true",
                            help="train only the decoder (the shared token embedding stays trainable unless frozen too)")

    @classmethod
    def config_from_args(cls, args: Any, vocab_size: int, pad: int) -> OFAConfig:
        values = dict(vars(args)) if isinstance(args, argparse.Namespace) else dict(args)
        arch = values.get("arch") or values.get("_name") or "ofa_cn_base"
        base = config_for_arch(arch) if arch in ARCHITECTURES else OFAConfig()
        check_saved_options(values)
        return OFAConfig.from_mapping({**values, "vocab_size": vocab_size, "pad": pad}, base=base)

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
