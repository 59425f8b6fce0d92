"""`--lr-scheduler polynomial_decay` with the original's `--warmup-ratio`.

The original OFA (in its fairseq fork) counts the updates of the whole run once the training data
is loaded, total = sum over max_epoch epochs of ceil(batches per epoch / update_freq), then warms
up linearly for int(warmup_ratio x total) updates and decays to end_learning_rate at `total`.
fairseq only has --warmup-updates and --total-num-update, so the released scripts' `--warmup-ratio
0.06 --max-epoch 5` stop with "unrecognized arguments". This subclass takes fairseq's place under
the same name, with one more field; with warmup_ratio 0 (the default) it is fairseq's scheduler.

fairseq hands a scheduler only its optimizer, never the data, so the epoch length reaches it from
the task, which builds the training batch iterator (`OFATask.get_batch_iterator` calls
`note_train_batches`) before the trainer begins the first epoch (`step_begin_epoch`).
"""

# no `from __future__ import annotations`: fairseq reads the config fields' types at run time

import logging
import math
from dataclasses import dataclass, field
from typing import List, Optional

from fairseq.optim.lr_scheduler import (LR_SCHEDULER_DATACLASS_REGISTRY, LR_SCHEDULER_REGISTRY,
                                        register_lr_scheduler)
from fairseq.optim.lr_scheduler.polynomial_decay_schedule import (PolynomialDecayLRSchedule,
                                                                  PolynomialDecayLRScheduleConfig)
from omegaconf import II

logger = logging.getLogger(__name__)
NAME = "polynomial_decay"


@dataclass
class PolynomialDecayWithRatioConfig(PolynomialDecayLRScheduleConfig):
    warmup_ratio: float = field(default=0.0, metadata={
        "help": "warm up over this share of all the run's updates (max_epoch epochs), as the original OFA; "
                "sets warmup_updates and total_num_update once the training data is loaded"})
    # Optional: on the command line fairseq passes an absent --total-num-update as None, which its
    # own (float) field refuses, so polynomial_decay needed the flag even with --max-update.
    total_num_update: Optional[float] = field(default=II("optimization.max_update"), metadata={
        "help": "total number of updates over which to decay the learning rate (default: --max-update)"})
    max_update: int = II("optimization.max_update")
    max_epoch: int = II("optimization.max_epoch")
    update_freq: List[int] = II("optimization.update_freq")


def warmup_plan(batches_per_epoch: int, max_epoch: int, update_freq: List[int], ratio: float) -> tuple[int, int]:
    """(warmup updates, total updates) of a run, as the original's trainer counts them."""
    total = sum(math.ceil(batches_per_epoch / update_freq[min(i, len(update_freq) - 1)]) for i in range(max_epoch))
    return int(total * ratio), total


class PolynomialDecayWithRatio(PolynomialDecayLRSchedule):
    """fairseq's polynomial decay; with warmup_ratio > 0 its length comes from the data (see module doc)."""

    train_batches_per_epoch: Optional[int] = None  # the training iterator's length, from the task

    def __init__(self, cfg: PolynomialDecayWithRatioConfig, optimizer):
        self.ratio = cfg.warmup_ratio
        if self.ratio > 0:
            if not 0 < self.ratio < 1:
                raise ValueError(f"--warmup-ratio {self.ratio}: expected a share of the updates in (0, 1)")
            if not cfg.max_epoch:
                raise ValueError("--warmup-ratio counts the updates of --max-epoch epochs; give --max-epoch, "
                                 "or use --warmup-updates with --total-num-update instead")
            if cfg.warmup_updates:
                raise ValueError(f"--warmup-ratio {self.ratio} and --warmup-updates {cfg.warmup_updates} both "
                                 "set the warmup; give one of them")
            cfg.total_num_update = 1  # a placeholder until the first epoch: fairseq's __init__ asserts > 0
        elif not cfg.total_num_update and cfg.max_update:
            cfg.total_num_update = cfg.max_update  # the field's default, lost on the command line
        elif not cfg.total_num_update:
            raise ValueError("--lr-scheduler polynomial_decay needs the run's length: --total-num-update, "
                             "--max-update, or --warmup-ratio with --max-epoch (as the original OFA scripts)")
        super().__init__(cfg, optimizer)
        self.planned = self.ratio <= 0

    def step_begin_epoch(self, epoch):
        if not self.planned:
            batches = type(self).train_batches_per_epoch
            if not batches:
                raise RuntimeError("--warmup-ratio: the training data's length is unknown; the task must build "
                                   "its batch iterator through OFATask.get_batch_iterator")
            warmup, total = warmup_plan(batches, self.cfg.max_epoch, list(self.cfg.update_freq), self.ratio)
            self.cfg.warmup_updates = warmup  # fairseq's step_update reads it from the config
            self.cfg.total_num_update = self.total_num_update = total
            self.planned = True
            logger.info("warmup_ratio %g: %d warmup updates of %d (%d epochs of %d batches)",
                        self.ratio, warmup, total, self.cfg.max_epoch, batches)
        return super().step_begin_epoch(epoch)


def note_train_batches(batches_per_epoch: int) -> None:
    """Called by the task with the length of the training iterator (batches in one epoch).

    The scheduler reads it once, at the first epoch (as the original, which counts the first
    epoch's batches for every epoch).
    """
    PolynomialDecayWithRatio.train_batches_per_epoch = batches_per_epoch


# Take fairseq's place under its own name, so the original's command lines run unchanged.
if LR_SCHEDULER_REGISTRY.get(NAME) is not PolynomialDecayWithRatio:
    LR_SCHEDULER_REGISTRY.pop(NAME, None)
    LR_SCHEDULER_DATACLASS_REGISTRY.pop(NAME, None)
    register_lr_scheduler(NAME, dataclass=PolynomialDecayWithRatioConfig)(PolynomialDecayWithRatio)
