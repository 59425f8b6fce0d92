"""The other codes that scripts/benchmark.py times in the same run as ours (issue #22).

    original     OFA-Sys/OFA, a checkout built by scripts/build_original.py (`--against PATH`): its own
                 model, criterion, Adam and sequence generator, in its own venv (scripts/original_worker.py)
    modelscope   ModelScope's OFA (`--peer modelscope`; the `modelscope` package of this venv): its
                 OFAModel, its trainer's criterion, its SequenceGenerator; the Adam step is fairseq's
                 `adam`, as the original's (ModelScope's trainer would take torch's AdamW, whose eps
                 sits outside the bias correction: other weights wherever gradients are near eps)

Both start from our seeded weights (the original reads them from a file; ModelScope's are mapped by
`state_dict_to_modelscope`) and our batch, so their results are compared with ours: the generated
tokens must be identical, and the weights after the warm-up training steps equal to float tolerance
(`agreement`). benchmark.py schedules, times and reports; this file only runs and compares.
"""

from __future__ import annotations

import gc
import json
import math
import os
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))

from build_original import VENV, python_environment  # noqa: E402
from original_worker import SIZE_FIELDS, reset_peak_rss, weights_fingerprint  # noqa: E402

PEERS = ("original", "modelscope")
PEER_WORKLOADS = ("train", "generate")  # what the peers run (the table); forward is ours only
# Training steps agree when the weights they leave differ by at most this fraction of the change they
# made (`update_distance`), in the image stem and in the rest, and the first losses by LOSS_RTOL.
UPDATE_RTOL = 0.02
LOSS_RTOL = 1e-5
STEM_PREFIX = "encoder.embed_images."  # the ResNet


# --- the original ---------------------------------------------------------------------------

def original_python(checkout: str | Path) -> Path:
    """The Python of the original's venv; SystemExit naming the build command when it is missing."""
    python = Path(checkout) / VENV / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{checkout} has no {VENV}: build it first with "
                         f"`python3.11 scripts/build_original.py {checkout}` (see README, speed)")
    return python


def sample_key(batch: int, size: int) -> str:
    """The name of one batch in the original's inputs file."""
    return f"b{batch} {size}px"


def run_original(spec: Mapping[str, Any], cfg, generation: Mapping[str, Any]) -> dict[str, Any]:
    """One workload on the original, in its venv (scripts/original_worker.py), with the sizes of our
    model's config `cfg` (every architecture field the worker passes, so any preset builds the same
    model there). -> the worker's raw result"""
    payload = {k: spec[k] for k in ("against", "inputs", "workload", "size", "warmup", "reps", "threads")}
    payload.update(overrides={k: getattr(cfg, k) for k in SIZE_FIELDS},
                   sample_key=sample_key(spec["batch"], spec["size"]), generation=dict(generation))
    cmd = [str(original_python(spec["against"])), str(SCRIPTS / "original_worker.py"), json.dumps(payload)]
    env = {**os.environ, **python_environment(spec["against"])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=spec["against"])
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"the original's worker failed ({' '.join(cmd[:2])} ...):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


# --- ModelScope ---------------------------------------------------------------------------------

def import_modelscope() -> types.SimpleNamespace:
    """ModelScope's OFA classes. modelscope 1.40's OFA code was written for transformers 4; with
    transformers 5 three of its imports moved, and they are pointed at their new homes first (as
    tests/test_modelscope.py does). ImportError when modelscope or transformers is missing."""
    import transformers.models.bert.tokenization_bert as bert
    from transformers.models.bart import tokenization_bart
    try:
        from transformers.models.bert import tokenization_bert_legacy
    except ImportError:  # transformers 4: nothing moved
        tokenization_bert_legacy = bert
    bert.BasicTokenizer = tokenization_bert_legacy.BasicTokenizer
    bert.WordpieceTokenizer = tokenization_bert_legacy.WordpieceTokenizer
    fast = types.ModuleType("transformers.models.bart.tokenization_bart_fast")
    fast.BartTokenizerFast = tokenization_bart.BartTokenizer
    sys.modules.setdefault(fast.__name__, fast)
    from modelscope.models.multi_modal.ofa import OFAModel, OFATokenizerZH
    from modelscope.models.multi_modal.ofa.configuration_ofa import OFAConfig
    from modelscope.models.multi_modal.ofa.generate.sequence_generator import SequenceGenerator

    OFAConfig.forced_bos_token_id = None  # no longer a PretrainedConfig default in transformers 5
    return types.SimpleNamespace(Model=OFAModel, Config=OFAConfig, Tokenizer=OFATokenizerZH,
                                 Generator=SequenceGenerator, Criterion=_modelscope_criterion_class())


def _modelscope_criterion_class():
    """ModelScope's OFA training criterion, read from its module file: the package around it
    (modelscope.trainers.multi_modal.ofa) imports the trainer, which imports `datasets`, not installed
    here; the criterion's own module needs only torch and transformers."""
    import importlib.util

    import modelscope

    path = Path(modelscope.__file__).parent / "trainers" / "multi_modal" / "ofa" / "ofa_trainer_utils.py"
    spec = importlib.util.spec_from_file_location("modelscope_ofa_trainer_utils", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.AdjustLabelSmoothedCrossEntropyCriterion


class _CriterionArgs(dict):
    """The `args` ModelScope's criterion reads: a dict with `.get` and attribute access."""
    __getattr__ = dict.get


def modelscope_model(ms: types.SimpleNamespace, ours) -> torch.nn.Module:
    """ModelScope's OFAModel of our model's config, with our model's weights (strict)."""
    from ofa_cn.checkpoints.modelscope import modelscope_config, state_dict_to_modelscope

    theirs = ms.Model(ms.Config(**modelscope_config(ours.cfg)))
    theirs.load_state_dict(state_dict_to_modelscope(ours.state_dict(), ours.cfg), strict=True)
    return theirs


def modelscope_tokenizer(ms: types.SimpleNamespace, folder: Path):
    """ModelScope's Chinese OFA tokenizer over our 30,325 symbols (its generator reads the special ids)."""
    from ofa_cn.checkpoints.modelscope import modelscope_vocab
    from ofa_cn.tokenizer import DEFAULT_CODE_DICT_SIZE, DEFAULT_NUM_BINS

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(modelscope_vocab()) + "\n", encoding="utf-8")
    tok = ms.Tokenizer.from_pretrained(str(folder))
    tok.add_tokens([f"<code_{i}>" for i in range(DEFAULT_CODE_DICT_SIZE)])
    tok.add_tokens([f"<bin_{i}>" for i in range(DEFAULT_NUM_BINS)])
    return tok


def run_modelscope(spec, build_ours: Callable[[], Any], sample: Mapping[str, Any], generation: Mapping[str, Any],
                   label_smoothing: float, make_optimizer: Callable[[torch.nn.Module], Any], scratch: Path
                   ) -> dict[str, Any]:
    """One workload on ModelScope's OFA, from our seeded model's weights and our batch. -> raw result (as
    the original's worker returns: times, check, fingerprints; the caller reads the peak memory, which
    starts at the first step: our model is freed by then)"""
    from ofa_cn.checkpoints.modelscope import from_modelscope_key

    ms = import_modelscope()
    ours = build_ours()
    theirs, pad = modelscope_model(ms, ours), ours.cfg.pad
    del ours
    net = sample["net_input"]
    ms_input = {"input_ids": net["src_tokens"], "patch_images": net["patch_images"], "patch_masks": net["patch_masks"]}
    fingerprints = {}

    if spec.workload == "train":
        criterion = ms.Criterion(_CriterionArgs(label_smoothing=label_smoothing,
                                                tokenizer=types.SimpleNamespace(pad_token_id=pad)))
        optimizer = make_optimizer(theirs)  # fairseq's adam, as the original's (see the module's docstring)
        batch = {"net_input": {**ms_input, "decoder_input_ids": net["prev_output_tokens"]},
                 "target": sample["target"], "ntokens": sample["target"].numel(),
                 "nsentences": sample["target"].size(0)}
        wrapper = types.SimpleNamespace(model=theirs)  # the criterion calls `model.model(...)` (OfaForAllTasks)

        def step():
            theirs.train()  # as OfaTrainer.train_step, then its optimizer hook
            loss, _, _ = criterion(wrapper, {**batch, "net_input": dict(batch["net_input"])})
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            return float(loss.detach())
        fingerprints["weights_before"] = weights_fingerprint(theirs, from_modelscope_key)
    elif spec.workload == "generate":
        generator = ms.Generator(modelscope_tokenizer(ms, scratch), beam_size=generation["beam"],
                                 max_len_b=generation["max_len_b"], min_len=generation["min_len"],
                                 no_repeat_ngram_size=generation["no_repeat_ngram_size"])
        theirs.eval()

        @torch.no_grad()
        def step():
            hyps = generator.generate([theirs], {"net_input": ms_input})
            return [h[0]["tokens"].tolist() for h in hyps]
    else:
        raise ValueError(f"the ModelScope peer runs {PEER_WORKLOADS}, not {spec.workload!r}")

    gc.collect()
    reset_peak_rss()
    first = step()
    for _ in range(spec.warmup - 1):
        step()
    if spec.workload == "train":
        fingerprints["weights_after"] = weights_fingerprint(theirs, from_modelscope_key)
    times = []
    for _ in range(spec.reps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"times": times, "check": first, **fingerprints}


# --- comparison -------------------------------------------------------------------------------

def update_distance(ours: Mapping[str, Any], peer: Mapping[str, Any]) -> dict[str, float]:
    """How far the peer's training steps moved the weights from where ours moved them: the L2 norm of the
    difference of the two runs' parameters after the warm-up steps over the L2 norm of our change, over
    the sampled values, for the image stem (ResNet) and for the rest. -> {"stem": d, "rest": d}"""
    before, after, theirs = ours["weights_before"], ours["weights_after"], peer["weights_after"]
    sums = {"stem": [0.0, 0.0], "rest": [0.0, 0.0]}
    for key in after.keys() & theirs.keys():
        part = sums["stem" if key.startswith(STEM_PREFIX) else "rest"]
        for a, b, start in zip(after[key], theirs[key], before[key]):
            part[0] += (a - b) ** 2
            part[1] += (a - start) ** 2
    return {name: math.sqrt(diff / moved) if moved else (math.inf if diff else 0.0)
            for name, (diff, moved) in sums.items()}


def _percent(distance: Mapping[str, float]) -> str:
    return f"{100 * distance['stem']:.2f} %/{100 * distance['rest']:.2f} %"


def agreement(ours: Mapping[str, Any], peer: Mapping[str, Any], reference: Mapping[str, Any] | None = None
              ) -> tuple[bool, str]:
    """Same result as ours? generate: identical tokens. train: the same first loss, and weights after the
    warm-up steps within UPDATE_RTOL (`update_distance`) of our default path's, or of our reference
    path's when it ran: float32 rounding alone (NHWC vs NCHW convolutions) moves the ResNet's train-mode
    BatchNorm gradients by a few percent, and Adam's steps by more (README, speed). -> (same, why)"""
    if ours["workload"] == "generate":
        same = ours["check"] == peer["check"]
        return same, "identical tokens" if same else f"tokens differ: {ours['check']} vs {peer['check']}"
    if "weights_after" not in peer or "weights_after" not in ours:
        return False, "no weights to compare (Spec.fingerprint was off)"
    loss_same = abs(ours["check"] - peer["check"]) <= LOSS_RTOL * max(1.0, abs(ours["check"]))
    to_default = update_distance(ours, peer)
    detail = f"first loss {ours['check']:.6f} vs {peer['check']:.6f}; updates vs default {_percent(to_default)}"
    same = max(to_default.values()) <= UPDATE_RTOL
    if reference is not None and "weights_after" in reference:
        to_reference = update_distance(reference, peer)
        detail += (f", vs reference {_percent(to_reference)} (reference vs default "
                   f"{_percent(update_distance(ours, reference))})")
        same = same or max(to_reference.values()) <= UPDATE_RTOL
    return loss_same and same, detail + " (ResNet/rest, rel. L2)"
