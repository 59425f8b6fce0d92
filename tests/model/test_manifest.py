"""The model's state_dict is the released format: key for key, shape for shape, in order."""

from __future__ import annotations

import json

import pytest
import torch

from ofa_cn.model.config import config_for_arch
from ofa_cn.model.ofa import OFAModel

from conftest import REFERENCE, require_reference


def read_manifest(name: str):
    path = require_reference(REFERENCE) / f"{name}.manifest.tsv"
    rows, total = [], None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# total_parameters:"):
            total = int(line.split()[2])
        if not line or line.startswith("#"):
            continue
        key, shape, dtype = line.split("\t")
        rows.append((key, json.loads(shape), dtype))  # shape column: [1024, 768]
    return rows, total


@pytest.mark.parametrize("arch, entries, params", [
    ("ofa_cn_base", 967, 159_865_160),
    ("ofa_cn_large", 1627, 443_145_984),
])
def test_state_dict_equals_release_manifest(arch, entries, params):
    rows, total = read_manifest(arch)
    with torch.device("meta"):
        model = OFAModel.from_config(config_for_arch(arch))
    sd = model.state_dict()
    ours = [(k, list(v.shape), str(v.dtype).replace("torch.", "")) for k, v in sd.items()]
    assert len(rows) == entries and len(ours) == entries
    assert ours == rows
    unique = {id(p): p.numel() for p in model.parameters()}
    assert sum(unique.values()) == params == total
