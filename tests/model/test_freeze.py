"""Freezing options: what stops training, and what keeps training."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from helpers import tiny_config
from ofa_cn.model.blocks import FrozenBatchNorm2d
from ofa_cn.model.ofa import OFAModel
from ofa_cn.tokenizer import build_dictionary


class _Task:
    source_dictionary = build_dictionary()


def build(**flags):
    args = argparse.Namespace(arch="ofa_cn_base", **{**dataclasses.asdict(tiny_config()), **flags})
    return OFAModel.build_model(args, _Task())


def trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.fixture(scope="module")
def all_names():
    return trainable(build())


def test_freeze_embeddings(all_names):
    names = trainable(build(freeze_encoder_embedding=True))
    assert all_names - names == {"encoder.embed_tokens.weight"}  # one tied tensor: also decoder's and output's


def test_freeze_resnet_uses_frozen_bn_and_stops_the_stem(all_names):
    model = build(freeze_resnet=True)
    assert isinstance(model.encoder.embed_images.bn1, FrozenBatchNorm2d)
    assert not any(n.startswith("encoder.embed_images.") for n in trainable(model))
    assert "encoder.image_proj.weight" in trainable(model)


def test_freeze_encoder_keeps_decoder_and_shared_embedding(all_names):
    names = trainable(build(freeze_encoder=True))
    assert {n for n in names if n.startswith("encoder.")} == {"encoder.embed_tokens.weight"}
    assert {n for n in all_names if n.startswith("decoder.")} <= names
