"""The fairseq plugin: importing this package registers everything OFA-CN adds to fairseq.

``--user-dir ofa_cn`` imports it (fairseq imports a user dir's ``tasks/`` folder after the package),
and ``ofa_cn.register()`` does in your own code. Besides the tasks below it registers the model
(``ofa_cn.model.ofa``), the criteria (``ofa_cn.train.criterion``, ``ofa_cn.train.scst``), the optimizer
(``ofa_cn.train.optim``) and the original's ``--warmup-ratio`` for ``polynomial_decay`` (``ofa_cn.train.lr_schedule``), and lets ``torch.load(weights_only=True)`` (fairseq's loader too) read the
released checkpoints' ``argparse.Namespace``, and makes fairseq-train's checkpoint files
crash-safe (``ofa_cn.train.training_checkpoints.install``: the one place where fairseq's own functions
are replaced).
"""

from ..fairseq_import import import_fairseq

import_fairseq()  # first, so that fairseq's import leaves logging alone

from ..checkpoints.formats import allow_checkpoint_globals  # noqa: E402

allow_checkpoint_globals()

from ..train import criterion, lr_schedule, optim, scst  # noqa: E402,F401  (registration)
from ..train import training_checkpoints  # noqa: E402
from ..model import ofa  # noqa: E402,F401
from .caption import CaptionTask  # noqa: E402
from .grounding import RefcocoTask  # noqa: E402
from .ocr import OCRTask  # noqa: E402
from .pretrain import UnifyTask  # noqa: E402

training_checkpoints.install()  # fairseq-train's checkpoint files become crash-safe

__all__ = ["CaptionTask", "RefcocoTask", "OCRTask", "UnifyTask"]
