"""One benchmark workload on the ORIGINAL OFA (OFA-Sys/OFA), run by `scripts/benchmark.py --against PATH`.

    PYTHONPATH=PATH/fairseq:PATH PATH/.venv/bin/python scripts/original_worker.py SPEC_JSON

It runs in the original's own environment (made by scripts/build_original.py) and imports nothing of
ofa_cn: only torch and the original's code, built the way its `train.py` and `evaluate.py` build it
(fairseq's parser with `--user-dir PATH/ofa_module`, the caption task with `--bpe bert`, the model of
`--arch ofa_base` and the switches of every OFA-CN script, its `adjust_label_smoothed_cross_entropy`
criterion, the fork's `adam`, the task's sequence generator). The weights and the batch come from
the file `inputs` that benchmark.py wrote (our seeded model's state dict: the released key names
are the same on both sides, and the load is strict), so both codes start from the same numbers.

Workloads, as benchmark.py times them on our side:
    train     the criterion's forward, backward of loss / ntokens, an Adam step, gradients zeroed
    generate  eval mode, `prepare_for_inference_` as evaluate.py does, beam search through the task

Prints one line `RESULT {json}`: the timed repetitions, peak RSS, the first call's result (train: its
loss; generate: the best hypothesis' tokens per row) and, for train, `weights_fingerprint` of the
parameters before and after the warm-up steps. This file needs only torch at import time, so that
benchmark.py can import `weights_fingerprint` and the peak-RSS helpers from it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

LABEL_SMOOTHING = 0.1
# The model switches every OFA-CN training script passes (the released checkpoints' architecture).
MODEL_SWITCHES = ["--encoder-normalize-before", "--decoder-normalize-before", "--share-decoder-input-output-embed",
                  "--share-all-embeddings", "--layernorm-embedding", "--patch-layernorm-embedding",
                  "--code-layernorm-embedding", "--add-type-embedding", "--scale-attn", "--scale-fc", "--scale-heads",
                  "--disable-entangle"]
# No dropout and no stochastic depth, as benchmark.py's model (ofa_cn_base's defaults): same work, and
# a training step whose result does not depend on a random stream.
NO_DROPOUT = ["--dropout=0.0", "--attention-dropout=0.0", "--activation-dropout=0.0",
              "--encoder-drop-path-rate=0.0", "--decoder-drop-path-rate=0.0", "--resnet-drop-path-rate=0.0"]
# Architecture fields benchmark.py passes from our config (`overrides`); the original's flag has the same name.
SIZE_FIELDS = ("resnet_type", "encoder_embed_dim", "decoder_embed_dim", "encoder_ffn_embed_dim",
               "decoder_ffn_embed_dim", "encoder_attention_heads", "decoder_attention_heads", "encoder_layers",
               "decoder_layers", "token_bucket_size", "image_bucket_size", "max_source_positions",
               "max_target_positions", "code_image_size", "attn_scale_factor")
FINGERPRINT_PER_TENSOR = 16  # values sampled from each parameter (weights_fingerprint)


def original_args(checkout: str | Path, size: int, overrides: Mapping[str, Any] | None = None) -> list[str]:
    """fairseq command-line arguments that build the original OFA-CN base model, its criterion and optimizer.

    Args:
        checkout: the original's folder (PATH of --against).
        size: the image size of the batches (the task's patch_image_size).
        overrides: architecture fields (SIZE_FIELDS) on top of ofa_base's.
    """
    checkout = Path(checkout)
    unknown = sorted(set(overrides or {}) - set(SIZE_FIELDS))
    if unknown:
        raise ValueError(f"the original worker cannot pass the architecture fields {unknown}; it passes "
                         f"{list(SIZE_FIELDS)}")
    sizes = [f"--{k.replace('_', '-')}={v}" for k, v in (overrides or {}).items()]
    return [
        str(checkout / "README.md"),  # the task's `data` (positional): never read, no dataset is loaded
        f"--user-dir={checkout / 'ofa_module'}", "--task=caption", "--arch=ofa_base", *MODEL_SWITCHES, *NO_DROPOUT,
        *sizes, "--bpe=bert", f"--bpe-dir={checkout / 'utils' / 'BERT_CN_dict'}", f"--patch-image-size={size}",
        "--num-bins=1000", "--criterion=adjust_label_smoothed_cross_entropy", f"--label-smoothing={LABEL_SMOOTHING}",
        # benchmark.py's make_optimizer: the same Adam settings as the configs
        "--optimizer=adam", "--adam-betas=(0.9,0.999)", "--adam-eps=1e-08", "--weight-decay=0.01", "--lr=1e-05",
        "--cpu", "--seed=1",
    ]


def weights_fingerprint(model: torch.nn.Module, rename: Callable[[str], str] = str,
                        per_tensor: int = FINGERPRINT_PER_TENSOR) -> dict[str, list[float]]:
    """A few values of every parameter (not the BatchNorm statistics, which are no weights), at evenly
    spaced flat positions: enough to tell whether two training runs moved the same weights the same way,
    small enough for JSON. `rename` maps another code's names to ours. -> {name: values}"""
    out = {}
    for name, param in model.named_parameters():
        flat = param.detach().reshape(-1)
        count = min(per_tensor, flat.numel())
        idx = torch.arange(count) * (flat.numel() - 1) // max(count - 1, 1)  # integers: exact for any size
        out[rename(name)] = flat[idx].double().tolist()
    return out


def reset_peak_rss() -> None:
    """Make the peak RSS start from the current RSS (Linux: `5` to /proc/self/clear_refs), so that a
    workload's peak leaves out the transients of building it (the original holds two copies of the
    weights while it loads ours). Does nothing where the file cannot be written."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def build(spec: Mapping[str, Any]):
    """The original's task, model (our weights loaded strictly), criterion and optimizer. -> (task, cfg, model,
    criterion, optimizer factory)"""
    from fairseq import optim, options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, original_args(spec["against"], spec["size"], spec["overrides"]))
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    inputs = torch.load(spec["inputs"], weights_only=True)
    state_dict = inputs.pop("state_dict")
    theirs = model.state_dict()
    missing, unexpected = sorted(set(theirs) - set(state_dict)), sorted(set(state_dict) - set(theirs))
    if missing or unexpected:
        raise SystemExit(f"the original's model and ours differ in state-dict keys: missing {missing[:20]}, "
                         f"unexpected {unexpected[:20]}")
    # nn.Module's strict load, not fairseq's: the original's upgrade_state_dict_named would fill gaps silently
    torch.nn.Module.load_state_dict(model, state_dict, strict=True)
    criterion = task.build_criterion(cfg.criterion)
    make_optimizer = lambda: optim.build_optimizer(cfg.optimizer, [p for p in model.parameters() if p.requires_grad])  # noqa: E731
    return task, cfg, model, criterion, make_optimizer, inputs["samples"][spec["sample_key"]]


def run(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Build, warm up and time one workload on the original. -> times, peak RSS, check, fingerprints"""
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    load_before = os.getloadavg()[0]
    task, cfg, model, criterion, make_optimizer, sample = build(spec)
    fingerprints = {}
    if spec["workload"] == "train":
        optimizer = make_optimizer()
        sample = {**sample, "ntokens": sample["target"].numel(), "nsentences": sample["target"].size(0)}
        updates = iter(range(10**9))

        def step():
            model.train()  # as OFATask.train_step
            update = next(updates)
            model.set_num_updates(update)
            loss, sample_size, _ = criterion(model, sample, update_num=update)
            # benchmark.py's step divides the loss by its token count before backward (the trainer
            # multiplies the gradients by 1 / sample_size after it: the same gradients, one pass less)
            optimizer.backward(loss / sample_size)
            optimizer.step()
            optimizer.zero_grad()
            return float(loss.detach()) / sample_size
        fingerprints["weights_before"] = weights_fingerprint(model)
    elif spec["workload"] == "generate":
        from argparse import Namespace

        model.eval()
        model.prepare_for_inference_(cfg)  # as the original evaluate.py
        generator = task.build_generator([model], Namespace(**spec["generation"]))
        net_input = {k: v for k, v in sample["net_input"].items() if k != "prev_output_tokens"}

        def step():
            hyps = task.inference_step(generator, [model], {"net_input": net_input})
            return [h[0]["tokens"].tolist() for h in hyps]
    else:
        raise SystemExit(f"the original worker runs train or generate, not {spec['workload']!r}")

    gc.collect()  # our weights as loaded (the model holds its own copy)
    reset_peak_rss()
    first = step()  # the first call's result: what both codes must agree on
    for _ in range(spec["warmup"] - 1):
        step()
    if spec["workload"] == "train":
        fingerprints["weights_after"] = weights_fingerprint(model)
    times = []
    for _ in range(spec["reps"]):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"times": times, "peak_memory_gib": peak_rss_gib(), "check": first, **fingerprints,
            "torch": torch.__version__, "num_threads": torch.get_num_threads(),
            "load_average": [load_before, os.getloadavg()[0]]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", help="the workload as JSON: against, inputs, sample_key, workload, size, "
                                     "overrides, warmup, reps, threads, generation")
    spec = json.loads(parser.parse_args(argv).spec)
    result = run(spec)
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
