"""Shared fixtures: the golden reference (../shared/reference), tiny configs, seeded RNG."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# OFA_CN_REFERENCE points elsewhere (e.g. a reduced copy carried to a GPU machine)
REFERENCE = Path(os.environ.get("OFA_CN_REFERENCE", REPO.parent / "shared" / "reference"))
GOLDEN = REFERENCE / "golden_tiny1"
IN_CI = os.environ.get("CI", "").lower() == "true"


def require_reference(path: Path = REFERENCE) -> Path:
    """Skip when ../shared/reference is absent, except in CI, where that is a failure."""
    if not path.exists():
        if IN_CI:
            pytest.fail(f"{path} is missing; CI must run the golden reference tests (copy shared/ beside the repo)")
        pytest.skip(f"{path} is absent (the golden reference lives in ../shared beside the repository)")
    return path


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """torch on one thread for the test: on tiny ops a second thread only adds barrier waits, which
    grow huge when the CPU is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return require_reference(GOLDEN)


@pytest.fixture(scope="session")
def golden_checkpoint(golden_dir, tmp_path_factory) -> Path:
    """checkpoint.pt, decompressed once per session."""
    out = tmp_path_factory.mktemp("golden") / "checkpoint.pt"
    with gzip.open(golden_dir / "checkpoint.pt.gz", "rb") as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, length=1 << 22)
    return out


@pytest.fixture(scope="session")
def golden_inputs(golden_dir):
    return torch.load(golden_dir / "inputs.pt", weights_only=True)


@pytest.fixture(scope="session")
def golden_outputs(golden_dir):
    return torch.load(golden_dir / "outputs.pt", weights_only=True)


@pytest.fixture
def tiny_cfg():
    from helpers import tiny_config

    return tiny_config()
