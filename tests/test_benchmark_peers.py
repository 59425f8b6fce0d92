"""scripts/benchmark.py against other codes (issue #22): the command line, the round/ratio bookkeeping,
the weights comparison, ModelScope's OFA at tiny sizes (identical tokens, same weights after the
warm-up steps) and, when OFA_ORIGINAL points at a checkout built by scripts/build_original.py, the
original OFA at tiny sizes."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from conftest import IN_CI
from helpers import TINY_SIZES, load_script

pytestmark = pytest.mark.usefixtures("one_thread")

ORIGINAL = os.environ.get("OFA_ORIGINAL")  # a checkout of OFA-Sys/OFA built by scripts/build_original.py


@pytest.fixture(scope="module")
def benchmark():
    return load_script("benchmark")


def _fake_result(benchmark, spec, median, check=None):
    before = {"w": [0.0, 1.0]}
    after = {"w": [2e-5, 1.0 - 2e-5]}
    return {**spec.__dict__, "times": [median - 0.1, median, median + 0.1], "median": median,
            "min": median - 0.1, "max": median + 0.1, "throughput": spec.batch / median, "unit": "samples/s",
            "seconds_per_image": median / spec.batch, "peak_memory_gib": 1.0, "flops": None,
            "tflops_per_s": None, "check": check if check is not None else ([[5, 6, 2]] if spec.workload == "generate"
                                                                            else 10.25),
            "weights_before": before, "weights_after": after, "torch": torch.__version__, "num_threads": 2,
            "load_average": [0.5, 0.5], "device_name": "cpu"}


# ---- command line and bookkeeping ----------------------------------------------------------

def test_peer_rounds_alternate_and_print_each_rounds_ratio(benchmark, monkeypatch, capsys):
    calls = []
    medians = {"default": iter([1.0, 3.0, 2.0]), "modelscope": iter([2.0, 4.0, 4.0])}  # a drifting machine

    def fake_run_spec(spec):
        calls.append((spec.path, spec.fingerprint))
        return _fake_result(benchmark, spec, next(medians[spec.path]))

    monkeypatch.setattr(benchmark, "run_spec", fake_run_spec)
    benchmark.main(["--peer", "modelscope", "--paths", "default", "--workloads", "train", "--rounds", "3",
                    "--no-isolate", "--device", "cpu"])
    assert calls == [("default", True), ("modelscope", True), ("modelscope", True), ("default", True),
                     ("default", True), ("modelscope", True)]
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("modelscope/ours"))
    # rounds 2/1, 4/3, 4/2; pooled: median of (3.9..4.1, 1.9..2.1, 3.9..4.1) over median of (0.9..3.1) = 3.9/2.0
    assert line.startswith("modelscope/ours, ofa_cn_base train b4 256px: rounds 2.00 1.33 2.00, pooled 1.95; "
                           "weights after the warm-up steps: same (")


def test_command_line_of_the_peers(benchmark, tmp_path, monkeypatch):
    parser = benchmark.build_parser()

    def specs(*argv):
        return benchmark.make_specs(parser.parse_args(["--device", "cpu", *argv]), parser)

    made = specs("--against", str(tmp_path), "--peer", "modelscope")
    paths = ["default", "reference", "original", "modelscope"]
    assert [(s.workload, s.batch, s.path) for s in made] == [
        *[("train", 4, p) for p in paths], *[("generate", 1, p) for p in paths], *[("generate", 4, p) for p in paths]]
    assert all(s.fingerprint for s in made) and all(s.arch == "ofa_cn_base" and s.size == 256 for s in made)
    assert {s.against for s in made if s.path == "original"} == {str(tmp_path.resolve())}
    assert {s.against for s in made if s.path != "original"} == {None}
    # forward is ours only; without a peer nothing changes
    made = specs("--peer", "modelscope", "--workloads", "forward,train")
    assert [(s.workload, s.path) for s in made] == [("forward", "default"), ("forward", "reference"),
                                                     ("train", "default"), ("train", "reference"),
                                                     ("train", "modelscope")]
    assert [s.path for s in specs()] == ["default", "reference"] * 4 and not any(s.fingerprint for s in specs())
    assert [s.path for s in specs("--peer", "modelscope", "--paths", "default")] == ["default", "modelscope"] * 3
    for bad in (["--paths", "reference"], ["--ablation"], ["--dtype", "bf16"], ["--workloads", "forward"]):
        with pytest.raises(SystemExit):
            specs("--peer", "modelscope", *bad)
    # an unbuilt checkout: the message says how to build it
    with pytest.raises(SystemExit, match="build_original.py"):
        benchmark.main(["--against", str(tmp_path), "--device", "cpu"])


def test_original_inputs_are_written_once_per_architecture(benchmark, tmp_path):
    made = [benchmark.Spec(benchmark.QUICK_ARCH, workload, batch, 32, path, 1, 1, "cpu", "fp32", overrides=TINY_SIZES)
            for workload, batch in (("train", 2), ("generate", 1), ("generate", 2)) for path in ("default", "original")]
    benchmark.prepare_original_inputs(made, tmp_path)
    assert {s.inputs for s in made if s.path == "default"} == {None}
    (path,) = {s.inputs for s in made if s.path == "original"}
    inputs = torch.load(path, weights_only=True)
    assert set(inputs["samples"]) == {"b2 32px", "b1 32px"}
    ours = benchmark.build_model(benchmark.model_config(benchmark.QUICK_ARCH, **TINY_SIZES))
    assert inputs["state_dict"].keys() == ours.state_dict().keys()
    assert all(torch.equal(v, ours.state_dict()[k]) for k, v in inputs["state_dict"].items())
    sample = benchmark.make_batch(ours.cfg, 2, 32)
    assert torch.equal(inputs["samples"]["b2 32px"]["net_input"]["patch_images"], sample["net_input"]["patch_images"])


def test_weights_agree_within_float_tolerance_measured_by_the_reference_path():
    peers = load_script("benchmark_peers")
    n = 100  # sampled values in the stem and in the rest, each moved by 2e-5 (Adam: about lr a step)
    before = {"encoder.embed_images.conv1.weight": [0.1] * n, "decoder.fc1.weight": [0.2] * n}
    after = {k: [x + 2e-5 * (-1) ** i for i, x in enumerate(v)] for k, v in before.items()}

    def run(loss=10.0, flip=None, nudge=0.0):  # ours, with one stem value stepped the other way, all nudged
        weights = {k: [x + nudge for x in v] for k, v in after.items()}
        if flip is not None:
            weights["encoder.embed_images.conv1.weight"][flip] -= 2 * 2e-5 * (-1) ** flip
        return {"workload": "train", "check": loss, "weights_before": before, "weights_after": weights}

    ours = run()
    assert peers.update_distance(ours, run(flip=3)) == pytest.approx({"stem": 2 / n ** 0.5, "rest": 0.0})
    assert peers.agreement(ours, run(nudge=1e-8))[0]  # rounding: 0.05 % of the change
    same, detail = peers.agreement(ours, run(flip=3))  # 20 % of the stem's change: another step
    assert not same and "updates vs default 20.00 %/0.00 %" in detail
    # ... unless our reference path took that step too: then float32 rounding alone moves it as far
    same, detail = peers.agreement(ours, run(flip=3, nudge=1e-8), reference=run(flip=3))
    assert same and "vs reference 0.05 %/0.05 % (reference vs default 20.00 %/0.00 %)" in detail
    assert not peers.agreement(ours, run(loss=10.01))[0]  # another first loss
    assert not peers.agreement(ours, {"check": 10.0})[0]  # no weights to compare
    tokens = {"workload": "generate", "check": [[5, 6, 2]]}
    assert peers.agreement(tokens, {"check": [[5, 6, 2]]}) == (True, "identical tokens")
    assert not peers.agreement(tokens, {"check": [[5, 7, 2]]})[0]


# ---- the peers at tiny sizes ---------------------------------------------------------------

def _run(benchmark, workload, batch, paths, against=None, tmp_path=None):
    specs = [benchmark.Spec(arch=benchmark.QUICK_ARCH, workload=workload, batch=batch, size=32, path=path, reps=1,
                            warmup=2, device="cpu", dtype="fp32", threads=1, overrides=TINY_SIZES, fingerprint=True,
                            against=against if path == "original" else None) for path in paths]
    if against:
        benchmark.prepare_original_inputs(specs, tmp_path)
    results = {spec.path: benchmark.run_spec(spec) for spec in specs}
    for r in results.values():
        for key in ("median", "min", "max", "peak_memory_gib"):
            assert math.isfinite(r[key]) and r[key] > 0, (r["path"], key, r[key])
    return results


def _modelscope_or_skip():
    peers = load_script("benchmark_peers")
    try:
        peers.import_modelscope()
    except ImportError as e:
        if IN_CI:
            pytest.fail(f"modelscope is missing ({e}); install the dev extras (scripts/setup.sh)")
        pytest.skip(f"modelscope is not installed: {e}")


@pytest.mark.parametrize("workload, batch", [("generate", 3), ("train", 2)])
def test_modelscope_peer_computes_what_ours_does(benchmark, workload, batch):
    _modelscope_or_skip()
    results = _run(benchmark, workload, batch, ["default", "modelscope"])
    same, detail = benchmark.peers.agreement(results["default"], results["modelscope"])
    assert same, detail
    if workload == "generate":
        assert len(results["modelscope"]["check"]) == batch and all(len(t) == 17 for t in results["modelscope"]["check"])
    else:  # the steps moved the weights, and the losses of the first step agree
        assert abs(results["default"]["check"] - results["modelscope"]["check"]) < 1e-5
    row = benchmark.compare_peer("modelscope", results["modelscope"], results["default"])
    assert row["modelscope_over_default"] > 0 and row["modelscope_same"]


@pytest.mark.skipif(not ORIGINAL, reason="OFA_ORIGINAL is not set (a checkout built by scripts/build_original.py)")
@pytest.mark.parametrize("workload, batch", [("generate", 2), ("train", 2)])
def test_original_computes_what_ours_does(benchmark, workload, batch, tmp_path):
    results = _run(benchmark, workload, batch, ["default", "original"], against=str(Path(ORIGINAL).resolve()),
                   tmp_path=tmp_path)
    same, detail = benchmark.peers.agreement(results["default"], results["original"])
    assert same, detail
    if workload == "train":
        assert abs(results["default"]["check"] - results["original"]["check"]) < 1e-5
