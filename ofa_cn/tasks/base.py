"""OFATask: dictionary, tokenizer and the config shared by every OFA-CN task.

A task reads its TSV splits, builds the model, hands out fairseq's generator (set up for OFA in
`generate.py`), and turns generated ids into strings or boxes for the metrics. Field names are
the released checkpoints' saved task config, so those checkpoints set the task up unchanged.
"""


import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from fairseq import metrics
from fairseq.dataclass import FairseqDataclass
from fairseq.tasks import FairseqTask

from ..data.base import NoRows
from ..data.tsv import TSVFile
from ..generate import GENERATION_DEFAULTS, build_generator, check_generation_options, fixed_shape, generate
from ..train.lr_schedule import note_train_batches
from ..train.malloc import keep_freed_memory
from ..tokenizer import BOS, VOCAB_FILE, ChineseTokenizer, build_dictionary, vocab_sha256

logger = logging.getLogger(__name__)


@dataclass
class OFATaskConfig(FairseqDataclass):
    data: str = field(default="", metadata={
        "help": "comma-separated TSV files: one or more training files (one per epoch, cycled), then the validation file"})
    selected_cols: Optional[str] = field(default=None, metadata={
        "help": "TSV column indices, in the order the task reads its fields (e.g. '0,1,2')"})
    bpe: Optional[str] = field(default="bert", metadata={"help": "must be 'bert' (Chinese BERT wordpieces)"})
    bpe_dir: Optional[str] = field(default=None, metadata={
        "help": "folder of a vocab.txt; ignored with a warning if absent (the packaged vocabulary is used)"})
    max_source_positions: int = field(default=1024, metadata={"help": "encoder text positions"})
    max_target_positions: int = field(default=1024, metadata={"help": "decoder positions"})
    max_src_length: int = field(default=128, metadata={"help": "longest prompt text kept (words)"})
    max_tgt_length: int = field(default=30, metadata={"help": "longest target kept (tokens)"})
    code_dict_size: int = field(default=8192, metadata={"help": "<code_i> symbols in the dictionary"})
    patch_image_size: int = field(default=480, metadata={"help": "images are resized to this square size"})
    orig_patch_image_size: int = field(default=256, metadata={"help": "pretraining image size (interpolation only)"})
    num_bins: int = field(default=1000, metadata={"help": "<bin_i> symbols: quantisation of box coordinates"})
    imagenet_default_mean_and_std: bool = field(default=False, metadata={
        "help": "normalise with ImageNet mean/std instead of 0.5/0.5"})
    constraint_range: Optional[str] = field(default=None, metadata={
        "help": "'start,end': generation may only emit these ids (plus the 4 specials)"})
    eval_args: str = field(default="{}", metadata={
        "help": 'generation settings for in-loop validation metrics, JSON, e.g. {"beam":5,"max_len_b":16}'})
    eval_print_samples: bool = field(default=False, metadata={"help": "log one prediction per validation batch"})
    skip_bad_rows: bool = field(default=False, metadata={
        "help": "skip (and count in the log) rows with corrupt images or fields instead of stopping"})
    return_freed_memory: bool = field(default=False, metadata={
        "help": "give freed memory back to the OS at once (glibc's default). Off: freed memory is kept for "
                "reuse, which saves the page faults of re-allocating large tensors every step (a large share of "
                "a CPU train step at 480 px; the README's speed measurements) but holds the peak memory until "
                "the process exits (ofa_cn/train/malloc.py)"})
    compile_layers: bool = field(default=False, metadata={
        "help": "torch.compile the image stem and every transformer layer (OFAModel.compile_layers). Off by "
                "default: on a CPU it did not beat the default path (the README's speed measurements), and every "
                "new input shape pays a compilation"})


class OFATask(FairseqTask):
    """Shared behaviour; subclasses set FIELDS, build their dataset and score predictions."""

    FIELDS: Sequence[str] = ()
    DEFAULT_COLS: str = ""
    cfg: OFATaskConfig

    def __init__(self, cfg: OFATaskConfig, dictionary):
        super().__init__(cfg)
        self.dictionary = dictionary
        self.tokenizer = ChineseTokenizer(cfg.num_bins, cfg.code_dict_size)

    @classmethod
    def setup_task(cls, cfg: OFATaskConfig, **kwargs):
        if cfg.bpe not in (None, "bert"):
            raise ValueError(f"task.bpe={cfg.bpe!r}: OFA-CN uses Chinese BERT wordpieces; set bpe=bert")
        if cfg.bpe_dir:
            vocab = Path(cfg.bpe_dir) / "vocab.txt"
            if not vocab.is_file():
                logger.info("bpe_dir %s has no vocab.txt here; using the packaged vocabulary", cfg.bpe_dir)
            elif vocab_sha256(vocab) != vocab_sha256(VOCAB_FILE):
                raise ValueError(f"{vocab} differs from the OFA-CN vocabulary (sha256); the ids would not match "
                                 "the checkpoint. Remove task.bpe_dir to use the packaged one.")
        if not getattr(cfg, "return_freed_memory", False):  # absent in configs saved before it existed
            keep_freed_memory()
        dictionary = build_dictionary(cfg.num_bins, cfg.code_dict_size)
        logger.info("dictionary: %d symbols", len(dictionary))
        return cls(cfg, dictionary)

    def build_model(self, cfg, from_checkpoint: bool = False):
        model = super().build_model(cfg, from_checkpoint)
        if getattr(self.cfg, "compile_layers", False):  # absent in configs saved before it existed
            model.compile_layers()
            logger.info("torch.compile: image stem and %d + %d transformer layers (compiled on first use)",
                        len(model.encoder.layers), len(model.decoder.layers))
        return model

    @property
    def source_dictionary(self):
        return self.dictionary

    @property
    def target_dictionary(self):
        return self.dictionary

    def max_positions(self):
        return (self.cfg.max_source_positions, self.cfg.max_target_positions)

    # ---- data -------------------------------------------------------------------------------
    def split_path(self, split: str, epoch: int = 1) -> str:
        if not self.cfg.data:
            raise ValueError("task.data is empty: give 'train.tsv,valid.tsv'")
        paths = [p for p in self.cfg.data.split(",") if p]
        if split == "train" and len(paths) > 1:
            return paths[(epoch - 1) % (len(paths) - 1)]
        if split == "train":
            return paths[0]
        return paths[-1]

    def open_tsv(self, path: str) -> TSVFile:
        return TSVFile(path, self.cfg.selected_cols or self.DEFAULT_COLS, self.FIELDS)

    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs):
        path = self.split_path(split, epoch)
        self.datasets[split] = self.build_dataset(self.open_tsv(path), split, epoch)
        logger.info("%s: %d rows from %s", split, len(self.datasets[split]), path)

    def get_batch_iterator(self, dataset, *args, **kwargs):
        training = dataset is self.datasets.get("train")
        if not training:
            # fairseq drops a last batch whose size is not a multiple of this: never when evaluating
            kwargs["required_batch_size_multiple"] = 1
        iterator = super().get_batch_iterator(dataset, *args, **kwargs)
        if training:
            note_train_batches(len(iterator))  # --warmup-ratio counts the run's updates from it
        return iterator

    def build_dataset(self, tsv: TSVFile, split: str, epoch: int):
        raise NotImplementedError(f"{type(self).__name__} must build its dataset")

    def inference_dataset(self):
        """The evaluation dataset without rows: its ``inference_sample`` turns images given directly
        (``ofa_cn.apps.inference.Predictor``) into samples with exactly the settings evaluation uses."""
        return self.build_dataset(NoRows(tuple(self.FIELDS)), "test", 1)

    def common_dataset_args(self, split: str, epoch: int) -> dict[str, Any]:
        return dict(split=split, patch_image_size=self.cfg.patch_image_size,
                    max_src_length=self.cfg.max_src_length, max_tgt_length=self.cfg.max_tgt_length,
                    imagenet_default_mean_and_std=self.cfg.imagenet_default_mean_and_std,
                    skip_bad_rows=self.cfg.skip_bad_rows)

    # ---- generation ---------------------------------------------------------------------------
    def generation_constraint(self) -> Optional[str]:
        """The allowed-id range for generation (the task config's; grounding: bins by default)."""
        return self.cfg.constraint_range

    def answer_shape(self) -> Optional[tuple[Sequence[int], int]]:
        """(allowed ids, length) when every answer is exactly `length` such ids, then </s>
        (grounding: the bins, 4); None for free text."""
        return None

    def build_generator(self, models, args, seq_gen_cls=None, extra_gen_cls_kwargs=None,
                        prefix_allowed_tokens_fn=None):
        """fairseq's hook: a generator with `args` (a dict or fairseq's generation config).

        Raises:
            ValueError: a generation option that cannot work, named (`check_generation_options`).
        """
        get = (lambda k, d: getattr(args, k, d)) if not isinstance(args, dict) else (lambda k, d: args.get(k, d))
        options = {k: get(k, d) for k, d in GENERATION_DEFAULTS.items()}
        shape = self.answer_shape()
        check_generation_options(options, answer_length=shape[1] if shape else None)
        return build_generator(
            models, self.target_dictionary, beam=options["beam"], max_len_a=options["max_len_a"],
            max_len_b=options["max_len_b"], min_len=options["min_len"],
            no_repeat_ngram_size=options["no_repeat_ngram_size"], len_penalty=options["lenpen"],
            unk_penalty=options["unkpen"], temperature=options["temperature"],
            constraint_range=self.generation_constraint(),
            prefix_allowed_tokens_fn=fixed_shape(*shape, self.target_dictionary.eos()) if shape else None,
        )

    def inference_step(self, generator, models, sample, prefix_tokens=None, constraints=None):
        return generate(generator, sample)

    # ---- validation metrics ------------------------------------------------------------------
    def eval_generation_args(self) -> dict[str, Any]:
        return json.loads(self.cfg.eval_args or "{}")

    def valid_step(self, sample, model, criterion):
        loss, sample_size, logging_output = super().valid_step(sample, model, criterion)
        gen_args = self.eval_generation_args()
        if gen_args and sample:
            if getattr(self, "_valid_generator", None) is None:
                self._valid_generator = self.build_generator([model], gen_args)
            hyps = self.inference_step(self._valid_generator, [model], sample)
            score_sum, count = self.score_batch(sample, [h[0]["tokens"] for h in hyps])
            logging_output["_metric_sum"] = score_sum
            logging_output["_metric_count"] = count
        return loss, sample_size, logging_output

    def score_batch(self, sample, best_tokens: list[torch.Tensor]) -> tuple[float, int]:
        """Sum of the task metric over a batch's best hypotheses, and the count."""
        raise NotImplementedError

    METRIC_NAME = "score"

    def reduce_metrics(self, logging_outputs, criterion):
        super().reduce_metrics(logging_outputs, criterion)
        total = sum(log.get("_metric_sum", 0.0) for log in logging_outputs)
        count = sum(log.get("_metric_count", 0) for log in logging_outputs)
        if count > 0:
            metrics.log_scalar("_metric_sum", total)
            metrics.log_scalar("_metric_count", count)
            metrics.log_derived(self.METRIC_NAME, lambda m: round(
                m["_metric_sum"].sum / m["_metric_count"].sum, 4) if m["_metric_count"].sum else 0.0)

    # ---- evaluation (scripts/evaluate.py, the CLI) --------------------------------------------
    DEFAULT_GENERATION: dict[str, Any] = {}  # the task's published generation settings

    def answers(self, sample, best_tokens: list[torch.Tensor]) -> list[Any]:
        """Each sample's best hypothesis as the task's answer: the one decoding that evaluation
        (``prediction_rows``) and the Predictor share. Text here; grounding gives boxes."""
        return [self.decode_text(tokens) for tokens in best_tokens]

    def prediction_rows(self, sample, best_tokens: list[torch.Tensor]) -> list[dict[str, Any]]:
        """One JSON-able row per sample: the prediction and its reference."""
        raise NotImplementedError(f"{type(self).__name__} has no evaluation")

    def corpus_metrics(self, rows: list[dict[str, Any]]) -> dict[str, float]:
        raise NotImplementedError(f"{type(self).__name__} has no evaluation")

    def decode_text(self, tokens: torch.Tensor) -> str:
        return self.tokenizer.decode(tokens)
