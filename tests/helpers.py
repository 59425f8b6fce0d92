"""Helpers for tests (importable as `helpers`: pytest's pythonpath includes tests/)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
# Every dimension different: D=24, F=40, 3 heads, 2+3 layers; a ResNet18 stem keeps a step well
# under a second on 32-px images.
TINY_SIZES = dict(resnet_type="resnet18", encoder_embed_dim=24, decoder_embed_dim=24, encoder_ffn_embed_dim=40,
                  decoder_ffn_embed_dim=40, encoder_attention_heads=3, decoder_attention_heads=3,
                  encoder_layers=2, decoder_layers=3)


def tiny_config(**overrides):
    """TINY_SIZES with small buckets and position tables."""
    from ofa_cn.model.config import OFAConfig

    values = dict(**TINY_SIZES, vocab_size=30325, token_bucket_size=16, image_bucket_size=10,
                  max_source_positions=64, max_target_positions=48, code_image_size=64)
    values.update(overrides)
    return OFAConfig(**values)


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter visible values (fresh init has zero relative tables, unit norms)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def load_script(name: str) -> ModuleType:
    """scripts/<name>.py as the module ofa_cn_<name> (registered, so its dataclasses find their module)."""
    spec = importlib.util.spec_from_file_location(f"ofa_cn_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
