"""OFA-CN as a fairseq plugin: ``--user-dir ofa_cn`` (or ``import ofa_cn``) registers everything.

Registered: the model ``ofa`` and its architectures (ofa_tiny/medium/base/large/huge,
ofa_cn_base/large, ofa_cn_demo), the tasks ``caption``, ``refcoco``, ``ocr``, ``unify_task`` and the
criteria ``adjust_label_smoothed_cross_entropy`` and ``scst_reward_criterion``, and the optimizer
``fused_adam`` (fairseq's ``adam`` in one fused kernel); ``polynomial_decay`` gains the original's
``--warmup-ratio``. Importing also lets ``torch.load`` read the
released checkpoints' ``argparse.Namespace`` with ``weights_only=True`` (nothing else).
"""

from .checkpoint import allow_checkpoint_globals

allow_checkpoint_globals()

from . import criterion, lr_schedule, optim, scst  # noqa: E402  (registration)
from .model import ofa  # noqa: E402
from . import tasks  # noqa: E402

__version__ = "0.1.0"
