"""Helpers for tests (importable as `helpers`: pytest's pythonpath includes tests/)."""

from __future__ import annotations

import torch


def tiny_config(**overrides):
    """Every dimension different: D=24, F=40, 3 heads, 2+3 layers, ResNet18 stem, small buckets."""
    from ofa_cn.model.config import OFAConfig

    values = dict(resnet_type="resnet18", encoder_embed_dim=24, decoder_embed_dim=24,
                  encoder_ffn_embed_dim=40, decoder_ffn_embed_dim=40, encoder_attention_heads=3,
                  decoder_attention_heads=3, encoder_layers=2, decoder_layers=3, vocab_size=30325,
                  token_bucket_size=16, image_bucket_size=10, max_source_positions=64,
                  max_target_positions=48, code_image_size=64)
    values.update(overrides)
    return OFAConfig(**values)


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter visible values (fresh init has zero relative tables, unit norms)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    return model
