"""Speed of OFA-CN: a training step, a forward pass and caption generation, ours against a reference.

    python scripts/benchmark.py --quick                          # golden-tiny sizes, ~2 min on 2 CPU cores
    python scripts/benchmark.py --arch ofa_cn_base --sizes 256   # base, ~10 min on 2 CPU cores
    python scripts/benchmark.py --device cuda --dtype bf16       # base and large, 256 and 480 px

Every workload runs twice, each time in a fresh subprocess (so that its peak memory is its own):
once on the default path and once on the reference path, which is the same model with plain
softmax(q k^T s + bias) v attention and every speed-up of `ofa_cn.model` switched off (see
`reference_path`). Both paths start from the same seeded weights and batch; the table shows
median/min/max seconds over --reps repetitions after warm-up, throughput, peak memory (peak RSS
on CPU, torch.cuda.max_memory_allocated on GPU), the time ratio default/reference, whether both
paths computed the same thing. Ratios are only ever between paths timed in the same run (the
original OFA's numbers from another day are not a same-run comparison; see README, speed).
A shared VM drifts by tens of percent within minutes; `--rounds N` runs each pair N times, the
path that goes first alternating, pools each path's repetitions and prints the ratio per round.

Against other codes, in the same run (issue #22; scripts/benchmark_peers.py):
    python scripts/benchmark.py --against PATH --rounds 3     # the original OFA, built by build_original.py
    python scripts/benchmark.py --peer modelscope --rounds 3  # ModelScope's OFA (the modelscope package)
add the peer(s) to our paths on the train and generate workloads, interleaved as above, from the same
seeded weights and batch; each round's time ratio peer/ours is printed, and whether the peer generated
identical tokens and left the same weights after the warm-up steps (to float tolerance, measured by
our reference path: see benchmark_peers.agreement).

Workloads (batch of caption prompts, random pixels, random targets of 20 tokens):
    train     forward + backward + Adam step, label-smoothed CE (0.1), --batch rows
    forward   eval, no grad, --batch rows
    generate  beam 5, 16 tokens (min_len = max_len_b = 16), no_repeat_ngram_size 3, --gen-batches rows
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from fairseq.optim import build_optimizer
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the peers' modules beside this file

import benchmark_peers as peers  # noqa: E402
from original_worker import reset_peak_rss, weights_fingerprint  # noqa: E402

import ofa_cn.train.optim  # noqa: E402,F401  (registers fused_adam)
from ofa_cn.train.criterion import label_smoothed_nll_loss  # noqa: E402
from ofa_cn.generate import build_generator, generate  # noqa: E402
from ofa_cn.train.malloc import keep_freed_memory  # noqa: E402
from ofa_cn.model.config import PATCH_STRIDE, RESNET_OUT_CHANNELS, config_for_arch  # noqa: E402
from ofa_cn.model.fast_paths import ONEDNN_LINEAR_MODES, REFERENCE, FastPaths, fast_paths, set_fast_paths  # noqa: E402
from ofa_cn.model.ofa import OFAModel  # noqa: E402
from ofa_cn.tokenizer import BOS, EOS, build_dictionary  # noqa: E402

logger = logging.getLogger("benchmark")

CAPTION_PROMPT = [0, 1749, 4279, 2993, 6839, 753, 788, 724, 1083, 2163, 140, 2]  # "图片描述了什么内容?"
TARGET_LENGTH = 20
LABEL_SMOOTHING = 0.1
GENERATION = dict(beam=5, max_len_b=16, min_len=16, no_repeat_ngram_size=3)
# The golden_tiny1 checkpoint's sizes (../shared/reference/golden_tiny1), for --quick.
QUICK_ARCH = "golden_tiny1"
QUICK_SIZES = dict(resnet_type="resnet50", encoder_embed_dim=128, decoder_embed_dim=128,
                   encoder_ffn_embed_dim=256, decoder_ffn_embed_dim=256,
                   encoder_attention_heads=4, decoder_attention_heads=4, encoder_layers=2, decoder_layers=2)
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16, SXM

PATHS = ("default", "reference")
_BUILT: dict[str, OFAModel] = {}  # CPU copies of the models built so far (GPU runs only)


# --- the model, the batch and the three workloads (also used by tests/test_benchmark_smoke.py) ---

def model_config(arch: str, **overrides):
    """OFAConfig of `arch` (a registered architecture or QUICK_ARCH)."""
    if arch == QUICK_ARCH:
        return config_for_arch("ofa_cn_base", **{**QUICK_SIZES, **overrides})
    return config_for_arch(arch, **overrides)


def build_model(cfg, device: str = "cpu", seed: int = 0) -> OFAModel:
    """Randomly initialised OFAModel (seeded: both paths get the same weights), moved to `device`.

    Built on the CPU: the position-bucket tables are float computations whose rounding must be
    the CPU's, as in every checkpoint.
    """
    if torch.device(device).type == "cpu":
        torch.manual_seed(seed)
        return OFAModel.from_config(cfg)
    key = repr((cfg, seed))  # GPU runs share one process: initialise each size once (large: seconds)
    if key not in _BUILT:
        torch.manual_seed(seed)
        _BUILT[key] = OFAModel.from_config(cfg)
    return copy.deepcopy(_BUILT[key]).to(device)


def make_optimizer(model: OFAModel, fused: bool = True):
    """fairseq's Adam as the configs train with it: `fused_adam` (ofa_cn/train/optim.py, one kernel over
    all parameters) or, unfused, fairseq's own `adam` (a Python loop over the tensors, as the original)."""
    cfg = OmegaConf.create({"_name": "fused_adam" if fused else "adam", "lr": [1e-5], "adam_betas": "(0.9,0.999)",
                            "adam_eps": 1e-8, "weight_decay": 0.01, "tpu": False})
    return build_optimizer(cfg, list(model.parameters()))


def make_batch(cfg, batch: int, image_size: int, device: str = "cpu", seed: int = 0) -> dict[str, Any]:
    """A caption-like batch: the caption prompt, random pixels, random 20-token targets ending in eos."""
    g = torch.Generator().manual_seed(seed)
    src = torch.tensor([CAPTION_PROMPT] * batch)
    images = torch.randn(batch, 3, image_size, image_size, generator=g)
    target = torch.randint(4, min(cfg.vocab_size, 21128), (batch, TARGET_LENGTH), generator=g)
    target[:, -1] = EOS
    prev = torch.cat([torch.full((batch, 1), BOS), target[:, :-1]], dim=1)
    net_input = {"src_tokens": src, "src_lengths": torch.full((batch,), src.size(1)), "patch_images": images,
                 "patch_masks": torch.ones(batch, dtype=torch.bool), "prev_output_tokens": prev}
    return {"net_input": {k: v.to(device) for k, v in net_input.items()}, "target": target.to(device)}


def _autocast(device: str, dtype: str):
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def train_step(model: OFAModel, optimizer: torch.optim.Optimizer, sample: dict[str, Any],
               dtype: str = "fp32") -> float:
    """Forward + backward + optimizer step on `sample`. -> the loss (per target token)."""
    model.train()
    with _autocast(sample["target"].device.type, dtype):
        logits, _ = model(**sample["net_input"])
    lprobs = F.log_softmax(logits.float(), dim=-1)  # [B, T, V]
    loss, _ = label_smoothed_nll_loss(lprobs.flatten(0, 1), sample["target"].flatten(), LABEL_SMOOTHING)
    loss = loss.sum() / loss.numel()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()  # FairseqOptimizer: gradients to None
    return float(loss.detach())


@torch.no_grad()
def forward_only(model: OFAModel, sample: dict[str, Any], dtype: str = "fp32") -> torch.Tensor:
    """Eval forward. -> logits [B, T, V]"""
    model.eval()
    with _autocast(sample["target"].device.type, dtype):
        logits, _ = model(**sample["net_input"])
    return logits


def build_caption_generator(model: OFAModel, dictionary=None):
    return build_generator([model], dictionary or build_dictionary(), **GENERATION)


@torch.no_grad()
def generate_captions(model: OFAModel, generator, sample: dict[str, Any], dtype: str = "fp32") -> list[list[int]]:
    """Beam search on `sample`'s images and prompts. -> the best hypothesis' ids per row."""
    model.eval()
    net_input = {k: v for k, v in sample["net_input"].items() if k != "prev_output_tokens"}
    with _autocast(sample["target"].device.type, dtype):
        hyps = generate(generator, {"net_input": net_input})
    return [h[0]["tokens"].tolist() for h in hyps]


# The default path's speed-ups, in the order they were added, with the workloads each changes.
# Every name but fused_adam and keep_freed_memory (run_spec's choice) is a field of
# `ofa_cn.model.fast_paths.FastPaths`, switched through `fast_paths`.
SPEEDUPS = {
    "sdpa": ("train", "forward", "generate"),  # fused scaled_dot_product_attention
    "channels_last": ("train", "forward", "generate"),  # NHWC convolutions in the image stem
    "fused_adam": ("train",),  # fairseq's Adam update in one kernel over all parameters (ofa_cn/train/optim.py)
    "cross_memory": ("generate",),  # cross K/V once per sentence, kept across steps, beams grouped
    "incremental_self_bias": ("generate",),  # self position bias of the new position only
    "transposed_linear": ("generate",),  # W x^T for the few rows of a decoding step (CPU)
    "onednn_linear": ("train", "forward", "generate"),  # oneDNN matmul for linears (CPU, fp32)
    "onednn_backward": ("train",),  # and for the backward's products (default: AVX-512 hosts only)
    "sparse_embedding_grad": ("train",),  # token lookups add their rows, no dense V x D buffers (CPU)
    "keep_freed_memory": ("train", "forward", "generate"),  # glibc reuses freed blocks: no page faults
    "fused_resnet": ("forward", "generate"),  # image stem: BatchNorm folded into oneDNN convs (CPU, fp32)
    "folded_cross_attention": ("train", "forward"),  # full-pass cross-attention without K/V projections (CPU)
}
RUN_SPEC_SPEEDUPS = ("fused_adam", "keep_freed_memory")
assert set(SPEEDUPS) == set(FastPaths.names()) | set(RUN_SPEC_SPEEDUPS), \
    "every model fast path (ofa_cn/model/fast_paths.py) needs an entry in SPEEDUPS, and no other name"


def speedups_off(names=tuple(SPEEDUPS)) -> contextlib.AbstractContextManager:
    """Switch the named speed-ups off (fused_adam and keep_freed_memory are run_spec's choice)."""
    unknown = sorted(set(names) - set(SPEEDUPS))
    if unknown:
        raise ValueError(f"unknown speed-ups {unknown}; known: {sorted(SPEEDUPS)}")
    return fast_paths(**{name: getattr(REFERENCE, name) for name in names if name not in RUN_SPEC_SPEEDUPS})


def reference_path():
    """The model without any speed-up (`fast_paths.REFERENCE`): eager softmax(q k^T s + bias) v
    attention, NCHW convolutions, cross K/V projected (not folded into the queries) and recomputed
    every decoding step, the self position bias of the whole prefix every step, x W^T through the
    default BLAS for every linear (and, in run_spec, torch's unfused Adam and glibc's default malloc)."""
    return speedups_off()


# --- analytic FLOPs (for MFU) ---

def resnet_flops(layers: tuple[int, int, int], size: int) -> float:
    """Multiply-adds x 2 of the truncated ResNet's convolutions on one size x size image."""
    h = size // 2
    flops = 2 * 3 * 64 * 7 * 7 * h * h  # conv1, stride 2
    h //= 2  # maxpool
    cin = 64
    for blocks, planes, stride in zip(layers, (64, 128, 256), (1, 2, 2)):
        out = planes * 4
        for i in range(blocks):
            s = stride if i == 0 else 1
            ho = h // s
            flops += 2 * cin * planes * h * h + 2 * planes * planes * 9 * ho * ho + 2 * planes * out * ho * ho
            if i == 0:
                flops += 2 * cin * out * ho * ho  # downsample
            cin, h = out, ho
    return flops


def forward_flops(cfg, batch: int, image_size: int, src_len: int = len(CAPTION_PROMPT),
                  tgt_len: int = TARGET_LENGTH) -> float:
    """FLOPs of one teacher-forced forward: convs, linears (2 in out per token), attention 4 T S D.

    Model FLOPs, as MFU counts them: the cross-attention's key/value projections are counted
    although the default path folds them away (`folded_attention`, 0.38 of their work at 256 px).
    """
    D, Fd, V = cfg.encoder_embed_dim, cfg.encoder_ffn_embed_dim, cfg.vocab_size
    n = (image_size // PATCH_STRIDE) ** 2
    S, T = n + src_len, tgt_len
    per_row = resnet_flops(cfg.resnet_layers, image_size) + 2 * RESNET_OUT_CHANNELS * D * n
    per_row += cfg.encoder_layers * (S * 2 * (4 * D * D + 2 * D * Fd) + 4 * S * S * D)
    per_row += cfg.decoder_layers * (T * 2 * (6 * D * D + 2 * D * Fd) + S * 2 * 2 * D * D
                                     + 4 * T * T * D + 4 * T * S * D)
    per_row += 2 * D * V * T
    return batch * per_row


def workload_flops(cfg, workload: str, batch: int, image_size: int) -> float | None:
    if workload == "forward":
        return forward_flops(cfg, batch, image_size)
    if workload == "train":
        return 3 * forward_flops(cfg, batch, image_size)
    return None


def peak_tflops(device: str, override: float | None) -> float | None:
    if override:
        return override
    if torch.device(device).type != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


# --- one (workload, path) in a subprocess ---

@dataclass
class Spec:
    arch: str
    workload: str
    batch: int
    size: int
    path: str
    reps: int
    warmup: int
    device: str
    dtype: str
    compile: bool = False
    threads: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)  # OFAConfig fields (tests: tiny sizes)
    off: list[str] | None = None  # speed-ups switched off (None: none on "default", all on "reference")
    onednn: str = FastPaths().onednn_linear  # Linear's CPU inference path on the default path: plain, packed or off
    fingerprint: bool = False  # train: also sample the weights before and after the warm-up steps
    against: str | None = None  # path "original": the original's checkout
    inputs: str | None = None  # path "original": our seeded weights and batch, saved for its worker


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _peak_memory_gib(device: str) -> float:
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def timing_summary(times: list[float], batch: int, flops: float | None) -> dict[str, Any]:
    """Repetition times (s) -> median, min, max and the rates of the median."""
    median = statistics.median(times)
    return {"times": times, "median": median, "min": min(times), "max": max(times),
            "throughput": batch / median, "seconds_per_image": median / batch,
            "tflops_per_s": flops / median / 1e12 if flops else None}


def run_spec(spec: Spec) -> dict[str, Any]:
    """Build, warm up and time one workload on one path. -> its results.

    The peers: "modelscope" runs here too (from our seeded weights), "original" in the original's venv.
    """
    if spec.path == "original":
        cfg = model_config(spec.arch, **spec.overrides)
        return finish_result(spec, cfg, peers.run_original(spec.__dict__, cfg, GENERATION))
    if spec.threads:
        torch.set_num_threads(spec.threads)
    if torch.device(spec.device).type == "cuda":
        gc.collect()  # the previous spec's model, when several run in one process
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    load_before = os.getloadavg()[0]
    set_fast_paths(onednn_linear=spec.onednn)
    off = (spec.off if spec.off is not None
           else list(SPEEDUPS) if spec.path in ("reference", "modelscope") else [])
    if "keep_freed_memory" not in off:  # as the tasks do; process-wide, so paths need --isolate (CPU default)
        keep_freed_memory()
    cfg = model_config(spec.arch, **spec.overrides)
    sample = make_batch(cfg, spec.batch, spec.size, spec.device)
    if spec.path == "modelscope":  # our seeded weights in ModelScope's model; ours is freed before the steps
        with tempfile.TemporaryDirectory() as scratch:
            raw = peers.run_modelscope(spec, lambda: build_model(cfg, spec.device), sample, GENERATION,
                                       LABEL_SMOOTHING, lambda m: make_optimizer(m, fused=False), Path(scratch))
        return finish_result(spec, cfg, {**raw, "peak_memory_gib": _peak_memory_gib(spec.device),
                                         "load_average": [load_before, os.getloadavg()[0]]})
    model = build_model(cfg, spec.device)
    if spec.compile and not off:
        model.compile_layers()
    step: Callable[[], Any]
    if spec.workload == "train":
        optimizer = make_optimizer(model, fused="fused_adam" not in off)
        step = lambda: train_step(model, optimizer, sample, spec.dtype)  # noqa: E731
    elif spec.workload == "forward":
        step = lambda: forward_only(model, sample, spec.dtype)  # noqa: E731
    elif spec.workload == "generate":
        generator = build_caption_generator(model)
        step = lambda: generate_captions(model, generator, sample, spec.dtype)  # noqa: E731
    else:
        raise ValueError(f"unknown workload {spec.workload!r}; expected train, forward or generate")

    fingerprints = {}
    fingerprinted = spec.fingerprint and spec.workload == "train"
    if fingerprinted:
        fingerprints["weights_before"] = weights_fingerprint(model)
    reset_peak_rss()  # the peak of the workload, as for the peers (no-op for CUDA's own counter)
    with speedups_off(off):
        first = step()  # the first call's result: what both paths must agree on
        for _ in range(spec.warmup - 1):
            step()
        _sync(spec.device)
        if fingerprinted:
            fingerprints["weights_after"] = weights_fingerprint(model)
        times = []
        for _ in range(spec.reps):
            start = time.perf_counter()
            step()
            _sync(spec.device)
            times.append(time.perf_counter() - start)

    if spec.workload == "forward":
        first = first.float().flatten()[:: max(1, first.numel() // 4096)].tolist()  # a strided sample
    return finish_result(spec, cfg, {"times": times, "check": first, **fingerprints,
                                     "peak_memory_gib": _peak_memory_gib(spec.device),
                                     # other processes on the CPU skew timings
                                     "load_average": [load_before, os.getloadavg()[0]]})


def finish_result(spec: Spec, cfg, raw: dict[str, Any]) -> dict[str, Any]:
    """A run's raw numbers (times, check, peak memory, load average, fingerprints) -> its full result."""
    flops = workload_flops(cfg, spec.workload, spec.batch, spec.size)
    return {
        **spec.__dict__, **raw, **timing_summary(raw["times"], spec.batch, flops),
        "unit": "images/s" if spec.workload == "generate" else "samples/s", "flops": flops,
        "torch": raw.get("torch", torch.__version__), "num_threads": raw.get("num_threads", torch.get_num_threads()),
        "device_name": (torch.cuda.get_device_name() if torch.device(spec.device).type == "cuda"
                        else platform.processor() or "cpu"),
    }


def run_in_subprocess(spec: Spec) -> dict[str, Any]:
    """run_spec in a fresh interpreter (its own peak RSS / CUDA allocator); the original's worker is one."""
    if spec.path == "original":
        return run_spec(spec)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec.__dict__)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark worker failed ({' '.join(cmd)}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def pool_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One spec's results from several rounds as one: all repetitions' times together (median,
    min, max and the rates from those), the highest peak memory, the first round's check value,
    and each round's median under "round_medians"."""
    first = rounds[0]
    return {
        **first, **timing_summary([t for r in rounds for t in r["times"]], first["batch"], first["flops"]),
        "peak_memory_gib": max(r["peak_memory_gib"] for r in rounds),
        "load_average": [first["load_average"][0], rounds[-1]["load_average"][1]],
        "round_medians": [r["median"] for r in rounds],
    }


# --- comparison and report ---

def agreement(default: dict[str, Any], reference: dict[str, Any]) -> str:
    """How close the two paths' first results are: |loss diff|, max |logit diff|, or tokens equal."""
    a, b = default["check"], reference["check"]
    if default["workload"] == "generate":
        return "same tokens" if a == b else "TOKENS DIFFER"
    if default["workload"] == "train":
        return f"|dloss| {abs(a - b):.1e}"
    return f"max|dlogit| {max(abs(x - y) for x, y in zip(a, b)):.1e}"


def report(results: list[dict[str, Any]], peak: float | None) -> list[dict[str, Any]]:
    """Print the table; -> one row per (arch, workload, batch, size): both paths and their ratios."""
    first = results[0]
    print(f"torch {first['torch']}, device {first['device']} ({first['device_name']}), dtype {first['dtype']}, "
          f"threads {first['num_threads']}, compile {first['compile']}, reps {first['reps']} after "
          f"{first['warmup']} warm-up; seconds per call (generate: per batch)")
    header = (f"{'arch':12} {'workload':8} {'b':>2} {'px':>4} {'path':10} {'median':>7} {'min':>7} {'max':>7} "
              f"{'thru/s':>7} {'peakGiB':>7} {'TF/s':>6} {'MFU':>6} {'load':>7} | {'def/ref':>7} {'agree':>18} |")
    print(header)
    print("-" * len(header))
    by_key: dict[tuple, dict[str, dict]] = {}
    for r in results:
        by_key.setdefault((r["arch"], r["workload"], r["batch"], r["size"]), {})[r["path"]] = r
    rows = []
    for key, paths in by_key.items():
        row: dict[str, Any] = dict(zip(("arch", "workload", "batch", "size"), key))
        d, ref = paths.get("default"), paths.get("reference")
        if d is not None and ref is not None:
            row["default_over_reference"] = d["median"] / ref["median"]
            row["agreement"] = agreement(d, ref)
            if len(d.get("round_medians", ())) > 1:
                row["default_over_reference_by_round"] = [
                    a / b for a, b in zip(d["round_medians"], ref["round_medians"])]
        for peer in peers.PEERS:
            if d is not None and peer in paths:
                row.update(compare_peer(peer, paths[peer], d, ref))
        for name, r in paths.items():
            r["mfu"] = r["tflops_per_s"] / peak if peak and r["tflops_per_s"] else None
            line = (f"{key[0]:12} {key[1]:8} {key[2]:>2} {key[3]:>4} {name:10} {r['median']:7.3f} {r['min']:7.3f} "
                    f"{r['max']:7.3f} {r['throughput']:7.2f} {r['peak_memory_gib']:7.2f} "
                    f"{_fmt(r['tflops_per_s'], '6.2f')} {_fmt(r['mfu'], '6.1%')} "
                    f"{r['load_average'][0]:3.1f}/{r['load_average'][1]:3.1f} |")
            if name == "default" and "agreement" in row:
                line += f" {row['default_over_reference']:7.2f} {row['agreement']:>18} |"
            else:
                line += f" {'':7} {'':18} |"
            print(line)
        rows.append(row)
    print("def/ref: median time default / reference (< 1: default faster). load: 1-min load average before/after (> threads: timings skewed).")
    for row in rows:
        if "default_over_reference_by_round" in row:
            ratios = row["default_over_reference_by_round"]
            print(f"def/ref by round, {row['arch']} {row['workload']} b{row['batch']} {row['size']}px: "
                  + " ".join(f"{x:.2f}" for x in ratios) + f" (median {statistics.median(ratios):.2f})")
    for row in rows:
        for peer in peers.PEERS:
            if f"{peer}_over_default" in row:
                print(peer_line(peer, row))
    if any(f"{peer}_over_default" in row for row in rows for peer in peers.PEERS):
        print("peer/ours: the peer's median time over ours (> 1: ours faster), each round's medians, then the "
              "pooled repetitions'. same/differ: generated tokens identical; weights after the warm-up steps "
              f"within {peers.UPDATE_RTOL:.0%} of the change the steps made (rel. L2, ResNet/rest) of our "
              "default path's or of our reference path's")
    return rows


def compare_peer(peer: str, theirs: dict[str, Any], ours: dict[str, Any],
                 reference: dict[str, Any] | None = None) -> dict[str, Any]:
    """Time ratios peer/ours (pooled, and per round) and whether the results agree (`peers.agreement`)."""
    same, detail = peers.agreement(ours, theirs, reference)
    out = {f"{peer}_over_default": theirs["median"] / ours["median"], f"{peer}_same": same,
           f"{peer}_agreement": detail}
    out[f"{peer}_over_default_by_round"] = [t / o for t, o in zip(theirs.get("round_medians", [theirs["median"]]),
                                                                  ours.get("round_medians", [ours["median"]]))]
    return out


def peer_line(peer: str, row: dict[str, Any]) -> str:
    """`original/ours, ofa_cn_base train b4 256px: rounds 1.29 1.13, pooled 1.21; weights: same (...)`"""
    what = "tokens" if row["workload"] == "generate" else "weights after the warm-up steps"
    rounds = " ".join(f"{x:.2f}" for x in row[f"{peer}_over_default_by_round"])
    return (f"{peer}/ours, {row['arch']} {row['workload']} b{row['batch']} {row['size']}px: rounds {rounds}, "
            f"pooled {row[f'{peer}_over_default']:.2f}; {what}: {'same' if row[f'{peer}_same'] else 'DIFFER'} "
            f"({row[f'{peer}_agreement']})")


def ablation_stages(workload: str) -> list[tuple[str, list[str]]]:
    """[("reference", all off), ("+sdpa", the rest off), ...]; the last stage is the default path."""
    names = [n for n, workloads in SPEEDUPS.items() if workload in workloads]
    stages = [("reference", list(SPEEDUPS))]
    for i, name in enumerate(names):
        stages.append(("default" if i == len(names) - 1 else f"+{name}",
                       [n for n in SPEEDUPS if n not in names[: i + 1]]))
    return stages


def report_ablation(results: list[dict[str, Any]]) -> None:
    """What each speed-up bought: median time of each cumulative stage, over the stage before."""
    print("ablation: each stage adds one speed-up to the one above (median s; ratio to the stage above; "
          "to the reference)")
    previous: dict[tuple, float] = {}
    for r in results:
        key = (r["arch"], r["workload"], r["batch"], r["size"])
        added = "(all off)" if r["path"] == "reference" else f"+{[n for n in SPEEDUPS if n not in r['off']][-1]}"
        line = f"{key[0]:12} {key[1]:8} b{key[2]:<2} {key[3]:>4}px {added:24} {r['median']:7.3f}"
        if key in previous:
            line += f"  {previous[key][-1] / r['median']:5.2f}x  {previous[key][0] / r['median']:5.2f}x"
        previous.setdefault(key, []).append(r["median"])
        print(line)


def _fmt(value: float | None, spec: str) -> str:
    width = int(spec.split(".")[0])
    return format(value, spec) if value is not None else "n/a".rjust(width)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", help="comma-separated architectures (default: ofa_cn_base; "
                                       "ofa_cn_base,ofa_cn_large on GPU)")
    parser.add_argument("--sizes", help="comma-separated image sizes in px (default: 256; 256,480 on GPU)")
    parser.add_argument("--workloads", help="any of train,forward,generate (default: all three; train,generate "
                                            "with --against or --peer)")
    parser.add_argument("--batch", type=int, default=4, help="rows of the train and forward batches")
    parser.add_argument("--gen-batches", default="1,4", help="batch sizes of the generate workload")
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions (>= 5 for the report)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run each default/reference pair this many times, alternating which goes "
                             "first, and pool the repetitions (a noisy machine: 3 or more)")
    parser.add_argument("--warmup", type=int, help="untimed calls first, the first of which is compared "
                                                   "(default 2: the first steps also grow the heap; "
                                                   "3 with --compile); the peers' weights are compared "
                                                   "after these training steps")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="bf16 = torch.autocast(bfloat16)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the stem and layers (default path)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help=f"the {QUICK_ARCH} sizes (D 128, 2+2 layers, resnet50)")
    parser.add_argument("--paths", default="default,reference",
                        help="which of default,reference to run (with --against or --peer: the reference path "
                             "is how far float32 rounding alone moves our training steps' weights)")
    parser.add_argument("--against", type=Path, metavar="PATH",
                        help="also run the original OFA from this checkout, built by scripts/build_original.py")
    parser.add_argument("--peer", choices=("modelscope",), action="append", default=[],
                        help="also run ModelScope's OFA (the modelscope package of this venv)")
    parser.add_argument("--onednn", choices=ONEDNN_LINEAR_MODES, default=FastPaths().onednn_linear,
                        help="Linear's CPU inference path on the default path (packed: faster, +1 copy of the weights)")
    parser.add_argument("--ablation", action="store_true",
                        help="instead of the two paths: from the reference, add the speed-ups one at a time")
    parser.add_argument("--peak-tflops", type=float, help="peak dense bf16 TFLOP/s for MFU (default: by GPU name)")
    parser.add_argument("--isolate", action=argparse.BooleanOptionalAction,
                        help="one subprocess per workload and path (default on CPU, where peak RSS "
                             "is per process; on GPU the peak is reset between runs instead)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one Spec as JSON
    return parser


def make_specs(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[Spec]:
    """The command line's runs: one Spec per (arch, size, workload, batch, path), in table order."""
    gpu = torch.device(args.device).type == "cuda"
    if args.quick:
        archs = [QUICK_ARCH]
    else:
        archs = (args.arch or ("ofa_cn_base,ofa_cn_large" if gpu else "ofa_cn_base")).split(",")
    sizes = [int(s) for s in (args.sizes or ("256,480" if gpu else "256")).split(",")]
    peer_paths = (["original"] if args.against else []) + list(dict.fromkeys(args.peer))
    workloads = (args.workloads or ("train,generate" if peer_paths else "train,forward,generate")).split(",")
    paths = [p for p in args.paths.split(",") if p]
    if not set(paths) <= set(PATHS):
        parser.error(f"--paths takes default and/or reference, got {args.paths!r}")
    if peer_paths:
        if "default" not in paths or args.ablation:
            parser.error("--against and --peer compare with the default path: keep it in --paths, no --ablation")
        if gpu or args.dtype != "fp32" or args.compile:
            parser.error("--against and --peer run on the CPU in fp32 without --compile (as the original runs)")
        if not set(workloads) & set(peers.PEER_WORKLOADS):
            parser.error(f"--against and --peer run the workloads {peers.PEER_WORKLOADS}, got {workloads}")
    if args.rounds < 1:
        parser.error(f"--rounds takes a count of 1 or more, got {args.rounds}")
    against = str(args.against.resolve()) if args.against else None
    warmup = max(1, args.warmup or (3 if args.compile else 2))
    specs = []
    for arch in archs:
        for size in sizes:
            for workload in workloads:
                batches = [int(b) for b in args.gen_batches.split(",")] if workload == "generate" else [args.batch]
                runs = [(p, None) for p in paths]
                if workload in peers.PEER_WORKLOADS:
                    runs += [(p, None) for p in peer_paths]
                for batch in batches:
                    for path, off in (ablation_stages(workload) if args.ablation else runs):
                        specs.append(Spec(arch, workload, batch, size, path, args.reps, warmup, args.device,
                                          args.dtype, args.compile, args.threads, off=off, onednn=args.onednn,
                                          fingerprint=bool(peer_paths),
                                          against=against if path == "original" else None))
    return specs


def prepare_original_inputs(specs: list[Spec], folder: Path) -> None:
    """Save, once per architecture, our seeded weights and every batch the original's runs need, and point
    those specs at the file (`Spec.inputs`)."""
    by_arch: dict[str, list[Spec]] = {}
    for spec in specs:
        if spec.path == "original":
            by_arch.setdefault(json.dumps([spec.arch, spec.overrides], sort_keys=True), []).append(spec)
    for i, group in enumerate(by_arch.values()):
        cfg = model_config(group[0].arch, **group[0].overrides)
        samples = {peers.sample_key(s.batch, s.size): make_batch(cfg, s.batch, s.size) for s in group}
        path = folder / f"original_inputs_{i}.pt"
        torch.save({"state_dict": build_model(cfg).state_dict(), "samples": samples}, path)
        for spec in group:
            spec.inputs = str(path)


def run_rounds(specs: list[Spec], rounds: int, isolate: bool) -> list[dict[str, Any]]:
    """Run every spec `rounds` times: the paths of one table row one after another, in the opposite order
    each round. -> each spec's results pooled over the rounds (`pool_rounds`)"""
    groups: dict[tuple, list[int]] = {}  # the specs of one table row (its paths or ablation stages)
    for i, spec in enumerate(specs):
        groups.setdefault((spec.arch, spec.workload, spec.batch, spec.size), []).append(i)
    results: list[list[dict[str, Any]]] = [[] for _ in specs]
    for round_ in range(rounds):
        for indices in groups.values():
            for i in indices if round_ % 2 == 0 else indices[::-1]:
                spec, start = specs[i], time.perf_counter()
                results[i].append(run_in_subprocess(spec) if isolate else run_spec(spec))
                logger.info("%s %s b%d %dpx %s%s: median %.3f s (%.0f s with start-up)", spec.arch, spec.workload,
                            spec.batch, spec.size, spec.path, f" round {round_ + 1}" if rounds > 1 else "",
                            results[i][-1]["median"], time.perf_counter() - start)
    return [pool_rounds(r) for r in results]


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.worker:
        result = run_spec(Spec(**json.loads(args.worker)))
        sys.stdout.write("RESULT " + json.dumps(result) + "\n")
        return

    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    specs = make_specs(args, parser)
    if args.against:
        peers.original_python(args.against)  # built? (else: how to build it)
    isolate = torch.device(args.device).type != "cuda" if args.isolate is None else args.isolate
    with tempfile.TemporaryDirectory(prefix="ofa_cn_benchmark_") as scratch:
        prepare_original_inputs(specs, Path(scratch))
        results = run_rounds(specs, args.rounds, isolate)
    peak = peak_tflops(args.device, args.peak_tflops)
    pairs = report(results, peak)
    if args.ablation:
        report_ablation(results)
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "pairs": pairs, "peak_tflops": peak,
                                               "argv": sys.argv[1:]}, indent=1))
        logger.info("wrote %s", args.json)


if __name__ == "__main__":
    main()
