"""scripts/benchmark.py's workloads run once at tiny sizes; default and reference paths agree."""

from __future__ import annotations

import math

import pytest
import torch

from helpers import TINY_SIZES, load_script

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def benchmark():
    return load_script("benchmark")


@pytest.mark.parametrize("workload, batch", [("train", 2), ("forward", 2), ("generate", 1), ("generate", 3)])
def test_workload_paths_agree(benchmark, workload, batch):
    results = {}
    for path in benchmark.PATHS:
        spec = benchmark.Spec(arch=benchmark.QUICK_ARCH, workload=workload, batch=batch, size=32, path=path,
                              reps=1, warmup=1, device="cpu", dtype="fp32", overrides=TINY_SIZES)
        results[path] = r = benchmark.run_spec(spec)
        for key in ("median", "min", "max", "throughput", "seconds_per_image", "peak_memory_gib"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r[key])
    default, reference = results["default"]["check"], results["reference"]["check"]
    if workload == "generate":
        assert len(default) == batch and all(len(tokens) == 17 for tokens in default)  # 16 + eos
        assert default == reference
    elif workload == "train":
        assert math.isfinite(default) and abs(default - reference) < 1e-5
    else:
        assert max(abs(a - b) for a, b in zip(default, reference)) < 1e-5


def test_flops_are_counted(benchmark):
    cfg = benchmark.model_config("ofa_cn_base")
    forward = benchmark.workload_flops(cfg, "forward", 4, 256)
    assert benchmark.workload_flops(cfg, "train", 4, 256) == 3 * forward
    # ResNet101 up to layer3 is ~7 GMACs on a 224-px image; 256 px has (256/224)^2 as many pixels
    assert 13e9 < benchmark.resnet_flops(cfg.resnet_layers, 224) < 15e9
    assert forward > 4 * benchmark.resnet_flops(cfg.resnet_layers, 256)


def _fake_result(spec, median):
    return {**spec.__dict__, "times": [median - 0.1, median, median + 0.1], "median": median,
            "min": median - 0.1, "max": median + 0.1, "throughput": spec.batch / median, "unit": "samples/s",
            "seconds_per_image": median / spec.batch, "peak_memory_gib": 1.0 + median, "flops": 2e12,
            "tflops_per_s": 2 / median, "check": [0.5, 0.25], "torch": torch.__version__, "num_threads": 2,
            "load_average": [0.5, 0.5], "device_name": "cpu"}


def test_rounds_alternate_the_paths_and_pool_their_times(benchmark, monkeypatch, capsys):
    calls = []
    medians = {"default": iter([1.0, 3.0, 2.0]), "reference": iter([2.0, 4.0, 4.0])}  # a drifting machine

    def fake_run_spec(spec):
        calls.append(spec.path)
        return _fake_result(spec, next(medians[spec.path]))

    monkeypatch.setattr(benchmark, "run_spec", fake_run_spec)
    benchmark.main(["--workloads", "forward", "--rounds", "3", "--no-isolate", "--device", "cpu"])
    assert calls == ["default", "reference", "reference", "default", "default", "reference"]
    out = capsys.readouterr().out
    assert "def/ref by round, ofa_cn_base forward b4 256px: 0.50 0.75 0.50 (median 0.50)" in out

    pooled = benchmark.pool_rounds([_fake_result(benchmark.Spec("a", "train", 4, 256, "default", 3, 1, "cpu", "fp32"),
                                                 m) for m in (1.0, 3.0, 2.0)])
    assert pooled["times"] == pytest.approx([0.9, 1.0, 1.1, 2.9, 3.0, 3.1, 1.9, 2.0, 2.1])
    assert (pooled["median"], pooled["min"], pooled["max"]) == pytest.approx((2.0, 0.9, 3.1))
    assert pooled["throughput"] == pytest.approx(2.0) and pooled["tflops_per_s"] == pytest.approx(1.0)
    assert pooled["peak_memory_gib"] == 4.0 and pooled["round_medians"] == [1.0, 3.0, 2.0]
