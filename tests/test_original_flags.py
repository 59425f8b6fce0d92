"""The original OFA's training command lines run unchanged through `fairseq-train --user-dir ofa_cn`.

Each list below is the argument list of a released script of OFA-Sys/OFA @a36b91c (run_scripts/),
as data: flag names and values, with the shell variables filled in and the paths replaced by
temporary ones. OFA-Sys/OFA ships no OCR training script; OCR_ARGS is the caption stage-1 list
with the OCR task and the generation settings of run_scripts/ocr/evaluate_ocr_base.sh.
"""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
from fairseq import options, tasks
from fairseq.criterions import CRITERION_REGISTRY
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.optim import FairseqOptimizer
from fairseq.optim.lr_scheduler import build_lr_scheduler

import ofa_cn.tasks  # noqa: F401  (registers the model, tasks and criteria that the flags name)
from conftest import REPO
from ofa_cn.train.lr_schedule import PolynomialDecayWithRatio, note_train_batches, warmup_plan
from ofa_cn.model.config import FIXED_OPTIONS, config_for_arch

# Model switches every released script passes (always on in OFA-CN).
MODEL_SWITCHES = ["--encoder-normalize-before", "--decoder-normalize-before", "--share-decoder-input-output-embed",
                  "--share-all-embeddings", "--layernorm-embedding", "--patch-layernorm-embedding",
                  "--code-layernorm-embedding"]
OPTIMIZATION = ["--weight-decay=0.01", "--optimizer=adam", "--adam-betas=(0.9,0.999)", "--adam-eps=1e-08"]
STRUCTURE = ["--add-type-embedding", "--scale-attn", "--scale-fc", "--scale-heads", "--disable-entangle"]

# run_scripts/caption/train_caption_stage1_base.sh
CAPTION_STAGE1 = [
    "--selected-cols=0,4,2", "--bpe-dir=../../utils/BPE", "--restore-file=../../checkpoints/ofa_base.pt",
    "--reset-optimizer", "--reset-dataloader", "--reset-meters", "--task=caption", "--arch=ofa_base",
    "--criterion=adjust_label_smoothed_cross_entropy", "--label-smoothing=0.1", "--batch-size=8",
    "--update-freq=4", *MODEL_SWITCHES, "--resnet-drop-path-rate=0.0", "--encoder-drop-path-rate=0.1",
    "--decoder-drop-path-rate=0.1", "--dropout=0.1", "--attention-dropout=0.0", *OPTIMIZATION,
    "--clip-norm=1.0", "--lr-scheduler=polynomial_decay", "--lr=1e-5", "--max-epoch=5", "--warmup-ratio=0.06",
    "--log-format=simple", "--log-interval=10", "--fixed-validation-seed=7", "--no-epoch-checkpoints",
    "--keep-best-checkpoints=1", "--save-interval=1", "--validate-interval=1", "--save-interval-updates=500",
    "--validate-interval-updates=500", "--eval-cider", "--eval-cider-cached-tokens=coco-valid-words.p",
    '--eval-args={"beam":5,"max_len_b":16,"no_repeat_ngram_size":3}', "--best-checkpoint-metric=cider",
    "--maximize-best-checkpoint-metric", "--max-src-length=80", "--max-tgt-length=20",
    "--find-unused-parameters", "--freeze-encoder-embedding", "--freeze-decoder-embedding", *STRUCTURE,
    "--num-bins=1000", "--patch-image-size=480", "--drop-worst-ratio=0.2", "--drop-worst-after=6000", "--fp16",
    "--fp16-scale-window=512", "--num-workers=0",
]
# run_scripts/caption/train_caption_stage2_base.sh
CAPTION_STAGE2 = [
    "--selected-cols=1,4,2", "--bpe-dir=../../utils/BPE", "--restore-file=caption_stage1_base_best.pt",
    "--reset-optimizer", "--reset-dataloader", "--reset-meters", "--task=caption", "--arch=ofa_base",
    "--criterion=scst_reward_criterion", "--batch-size=2", "--update-freq=4", *MODEL_SWITCHES,
    "--resnet-drop-path-rate=0.0", "--encoder-drop-path-rate=0.0", "--decoder-drop-path-rate=0.0",
    "--dropout=0.0", "--attention-dropout=0.0", *OPTIMIZATION, "--clip-norm=1.0",
    "--lr-scheduler=polynomial_decay", "--lr=1e-5", "--max-epoch=5", "--warmup-ratio=0.06",
    "--log-format=simple", "--log-interval=10", "--fixed-validation-seed=7", "--no-epoch-checkpoints",
    "--keep-best-checkpoints=1", "--save-interval=1", "--validate-interval=1", "--save-interval-updates=500",
    "--validate-interval-updates=500", "--eval-cider", "--eval-cider-cached-tokens=coco-valid-words.p",
    '--eval-args={"beam":5,"max_len_b":16,"no_repeat_ngram_size":3}', "--best-checkpoint-metric=cider",
    "--maximize-best-checkpoint-metric", "--max-src-length=80", "--max-tgt-length=20",
    "--find-unused-parameters", "--freeze-encoder-embedding", "--freeze-decoder-embedding", *STRUCTURE,
    "--num-bins=1000", "--patch-image-size=480", "--scst", "--scst-cider-cached-tokens=coco-train-words.p",
    '--scst-args={"beam":5,"max_len_b":16,"no_repeat_ngram_size":3}', "--memory-efficient-fp16",
    "--fp16-scale-window=512", "--num-workers=0",
]
# run_scripts/refcoco/train_refcoco_base.sh
REFCOCO = [
    "--selected-cols=0,4,2,3", "--bpe-dir=../../utils/BPE", "--restore-file=../../checkpoints/ofa_base.pt",
    "--reset-optimizer", "--reset-dataloader", "--reset-meters", "--task=refcoco", "--arch=ofa_base",
    "--criterion=adjust_label_smoothed_cross_entropy", "--label-smoothing=0.1", "--batch-size=4",
    "--update-freq=8", *MODEL_SWITCHES, "--resnet-drop-path-rate=0.0", "--encoder-drop-path-rate=0.1",
    "--decoder-drop-path-rate=0.1", "--dropout=0.1", "--attention-dropout=0.0", *OPTIMIZATION,
    "--clip-norm=1.0", "--lr-scheduler=polynomial_decay", "--lr=3e-5", "--max-epoch=5", "--warmup-ratio=0.06",
    "--log-format=simple", "--log-interval=10", "--fixed-validation-seed=7", "--no-epoch-checkpoints",
    "--keep-best-checkpoints=1", "--save-interval=1", "--validate-interval=1", "--save-interval-updates=500",
    "--validate-interval-updates=500", "--eval-acc", '--eval-args={"beam":5,"min_len":4,"max_len_a":0,"max_len_b":4}',
    "--best-checkpoint-metric=score", "--maximize-best-checkpoint-metric", "--max-src-length=80",
    "--max-tgt-length=20", "--find-unused-parameters", *STRUCTURE, "--num-bins=1000", "--patch-image-size=512",
    "--fp16", "--fp16-scale-window=512", "--num-workers=0",
]
# run_scripts/pretraining/pretrain_ofa_base.sh
PRETRAIN = [
    "--text-data=text_examples.tsv", "--image-data=image_examples.tsv", "--detection-data=detection_examples.tsv",
    "--selected-cols=0,1,2,3,4,5,6,7", "--text-selected-cols=0,1", "--image-selected-cols=0,1,2",
    "--detection-selected-cols=0,1,2", "--bpe-dir=../../utils/BPE", "--restore-file=../../checkpoints/ofa_base.pt",
    "--reset-optimizer", "--reset-dataloader", "--reset-meters", "--neg-sample-dir=negative_sample",
    "--task=unify_task", "--arch=ofa_base", "--criterion=adjust_label_smoothed_cross_entropy",
    "--label-smoothing=0.0", "--batch-size=4", "--update-freq=1", *MODEL_SWITCHES, "--resnet-drop-path-rate=0.0",
    "--encoder-drop-path-rate=0.1", "--decoder-drop-path-rate=0.1", "--dropout=0.1", "--attention-dropout=0.0",
    *OPTIMIZATION, "--clip-norm=5.0", "--lr-scheduler=polynomial_decay", "--lr=1e-4", "--max-epoch=50",
    "--warmup-ratio=0.01", "--log-format=simple", "--log-interval=10", "--fixed-validation-seed=7",
    "--keep-last-epochs=15", "--save-interval=1", "--save-interval-updates=6000", "--disable-validation",
    "--max-src-length=80", "--max-tgt-length=30", *STRUCTURE, "--num-bins=1000", "--patch-image-size=384",
    "--sample-patch-num=196", "--max-image-size=512", "--fp16", "--fp16-scale-window=128", "--num-workers=0",
]
# not released: CAPTION_STAGE1 for the OCR task (see the module docstring)
OCR = [a.replace("--task=caption", "--task=ocr") for a in CAPTION_STAGE1
       if not a.startswith(("--eval-cider", "--eval-args", "--best-checkpoint-metric", "--selected-cols"))]
OCR += ["--selected-cols=0,1,2", '--eval-args={"beam":5,"max_len_b":64,"no_repeat_ngram_size":0}']

SCRIPTS = {"caption_stage1": CAPTION_STAGE1, "caption_stage2": CAPTION_STAGE2, "refcoco": REFCOCO,
           "pretrain": PRETRAIN, "ocr": OCR}


@contextlib.contextmanager
def hydra_compat():
    """fairseq 0.12 composes its config with hydra.experimental.initialize, which hydra refuses once
    another caller in this process set version_base >= 1.2 (tests/test_configs.py does); a fresh
    fairseq-train process never has. Compose at hydra's compatibility level, then put it back."""
    from hydra.version import VersionBase, setbase

    saved = VersionBase.instance().getbase()
    setbase("1.1")
    try:
        yield
    finally:
        VersionBase.instance().version_base = saved


def parse(argv, tmp_path):
    """fairseq-train's own parsing (options.get_training_parser, parse_args_and_arch) -> its config."""
    data = f"{tmp_path}/train.tsv,{tmp_path}/valid.tsv"
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, input_args=[data, f"--user-dir={REPO / 'ofa_cn'}",
                                                           f"--save-dir={tmp_path}", *argv])
    with hydra_compat():
        return convert_namespace_to_omegaconf(args)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_released_script_arguments_parse_and_build_the_model(name, tmp_path):
    cfg = parse(SCRIPTS[name], tmp_path)
    task = tasks.setup_task(cfg.task)
    with torch.device("meta"):  # base size: only the structure matters here
        model = task.build_model(cfg.model)
    assert model.cfg == config_for_arch("ofa_base", vocab_size=30325, dropout=0.1 if name != "caption_stage2" else 0.0,
                                        encoder_drop_path_rate=model.cfg.encoder_drop_path_rate,
                                        decoder_drop_path_rate=model.cfg.decoder_drop_path_rate)
    assert model.cfg.encoder_drop_path_rate == (0.0 if name == "caption_stage2" else 0.1)
    assert sum(p.numel() for p in model.parameters()) == 159865160  # ofa_cn_base.manifest.tsv
    if name != "caption_stage2":  # SCST reads its cached-tokens file when built; here only the flags matter
        task.build_criterion(cfg.criterion)
    assert cfg.criterion._name in CRITERION_REGISTRY
    assert cfg.lr_scheduler._name == "polynomial_decay" and cfg.lr_scheduler.warmup_ratio in (0.06, 0.01)
    if name.startswith("caption_stage1"):
        assert not model.encoder.embed_tokens.weight.requires_grad  # --freeze-encoder-embedding


@pytest.mark.parametrize("flag, message", [
    ("--activation-fn=relu", r"'activation_fn': 'relu'.*'activation_fn': 'gelu'"),
    ("--sync-bn", r"'sync_bn': True.*not supported"),
    ("--encoder-prompt", r"'encoder_prompt': True"),
])
def test_a_value_ofa_cn_cannot_have_is_an_error(flag, message, tmp_path):
    cfg = parse([*REFCOCO, flag], tmp_path)
    task = tasks.setup_task(cfg.task)
    with pytest.raises(ValueError, match=message):
        with torch.device("meta"):
            task.build_model(cfg.model)


def test_switches_are_optional_and_default_to_ofa_cn(tmp_path):
    argv = [a for a in REFCOCO if a not in MODEL_SWITCHES]
    cfg = parse(argv, tmp_path)
    assert all(getattr(cfg.model, name) is None for name in FIXED_OPTIONS)  # not given = OFA-CN's value
    with torch.device("meta"):
        tasks.setup_task(cfg.task).build_model(cfg.model)


class FakeOptimizer(FairseqOptimizer):
    """Only the learning rate the scheduler sets."""

    def __init__(self):
        super().__init__(cfg=None)
        self.lr = None

    def set_lr(self, lr):
        self.lr = lr

    def get_lr(self):
        return self.lr


def test_warmup_ratio_is_a_share_of_all_updates(tmp_path):
    cfg = parse(CAPTION_STAGE1, tmp_path)  # lr 1e-5, 5 epochs, update_freq 4, ratio 0.06
    optimizer = FakeOptimizer()
    scheduler = build_lr_scheduler(cfg.lr_scheduler, optimizer)
    assert isinstance(scheduler, PolynomialDecayWithRatio)
    note_train_batches(1001)  # batches per epoch -> ceil(1001 / 4) = 251 updates an epoch
    assert warmup_plan(1001, 5, [4], 0.06) == (int(1255 * 0.06), 1255) == (75, 1255)
    scheduler.step_begin_epoch(1)
    lrs = {n: scheduler.step_update(n) for n in (0, 30, 75, 76, 665, 1255, 1300)}
    assert lrs[0] == 0 and math.isclose(lrs[30], 1e-5 * 30 / 75) and math.isclose(lrs[75], 1e-5)
    assert math.isclose(lrs[665], 1e-5 * (1 - (665 - 75) / (1255 - 75)))  # linear decay (power 1)
    assert lrs[1255] == lrs[1300] == 0.0


def test_warmup_ratio_needs_max_epoch(tmp_path):
    argv = [a for a in CAPTION_STAGE1 if not a.startswith("--max-epoch")] + ["--max-update=100"]
    cfg = parse(argv, tmp_path)
    with pytest.raises(ValueError, match="--warmup-ratio counts the updates of --max-epoch"):
        build_lr_scheduler(cfg.lr_scheduler, FakeOptimizer())


def test_polynomial_decay_without_ratio_is_fairseqs(tmp_path):
    argv = [a for a in CAPTION_STAGE1 if not a.startswith(("--max-epoch", "--warmup-ratio"))]
    cfg = parse([*argv, "--max-update=100", "--warmup-updates=10"], tmp_path)
    scheduler = build_lr_scheduler(cfg.lr_scheduler, FakeOptimizer())
    assert scheduler.total_num_update == 100  # from --max-update (fairseq's default, lost on the command line)
    assert math.isclose(scheduler.step_update(5), 0.5e-5) and math.isclose(scheduler.step_update(55), 0.5e-5)
    cfg = parse(argv, tmp_path)
    with pytest.raises(ValueError, match="needs the run's length"):
        build_lr_scheduler(cfg.lr_scheduler, FakeOptimizer())
