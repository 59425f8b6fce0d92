"""The fairseq registration of `ofa` (model/ofa.py): its dataclass, its help, its architectures, and
the one lookup (architecture preset, then saved values) behind the command line and checkpoints."""

from __future__ import annotations

import argparse
import dataclasses

import torch
from fairseq.models import ARCH_MODEL_NAME_REGISTRY, MODEL_DATACLASS_REGISTRY

from ofa_cn.checkpoints.formats import model_config
from ofa_cn.model.config import ARCHITECTURES, OFAConfig, config_for_arch, config_from_options
from ofa_cn.model.ofa import OFAModel, OFAModelConfig


def test_the_model_is_registered_with_its_dataclass():
    assert MODEL_DATACLASS_REGISTRY["ofa"] is OFAModelConfig
    for arch in ARCHITECTURES:
        assert ARCH_MODEL_NAME_REGISTRY[arch] == "ofa", arch


def test_every_option_has_a_real_help_text():
    for f in dataclasses.fields(OFAModelConfig):
        if f.name == "_name":
            continue
        help_ = f.metadata.get("help", "")
        # not the name with spaces (the old help of most fields), but what it does
        assert len(help_) >= 40 and help_.split(";")[0] != f.name.replace("_", " "), (f.name, help_)


def test_an_option_not_given_is_the_architectures():
    """None everywhere, so a default never hides the `--arch` preset; the help says what each preset has."""
    assert all(getattr(OFAModelConfig(), name) is None for name in OFAConfig.field_names() - {"vocab_size", "pad"})
    help_ = OFAModelConfig.__dataclass_fields__["encoder_layers"].metadata["help"]
    assert "6 (ofa_base, ofa_cn_base)" in help_ and "12 (ofa_large, ofa_cn_large)" in help_


def test_command_line_and_checkpoint_take_the_same_lookup():
    """Preset of the saved arch, then every saved value that is not None, then the dictionary's size."""
    saved = argparse.Namespace(arch="ofa_large", dropout=0.1, encoder_layers=None, scale_resids=None,
                               encoder_normalize_before=True)
    expected = config_for_arch("ofa_large", dropout=0.1)
    state = {"cfg": {"model": saved}, "model": {"encoder.embed_tokens.weight": torch.empty(30325, 1)}}
    assert model_config(state) == expected
    assert OFAModel.config_from_args(saved, vocab_size=30325, pad=1) == expected
    # our checkpoints: a dict with hydra's `_name`; fairseq's model name `ofa` starts from the defaults
    assert config_from_options({"_name": "ofa_cn_demo", "dropout": 0.2}) == config_for_arch("ofa_cn_demo", dropout=0.2)
    assert config_from_options({"_name": "ofa", "encoder_layers": 2}) == OFAConfig(encoder_layers=2)
    assert config_from_options({}) == config_for_arch("ofa_cn_base")
