"""OFA-CN, the Chinese OFA model, as a fairseq plugin; ``ofa_cn.load(path)`` for inference.

    import ofa_cn
    captioner = ofa_cn.load("caption_cn_base.pt")     # a Predictor that knows its task
    captioner("cat.jpg")                               # '一只猫躺在沙发上'

Importing this package is cheap (no torch, no fairseq), so ``ofa-cn --help`` and ``ofa-cn score``
start at once. The fairseq plugin lives in ``ofa_cn.tasks``: ``--user-dir ofa_cn`` imports it (fairseq
imports a user dir's ``tasks/`` folder after the package itself), and so does ``ofa_cn.register()``
or ``import ofa_cn.tasks`` in your own code. It registers the model ``ofa`` and its architectures
(ofa_tiny/medium/base/large/huge, ofa_cn_base/large, ofa_cn_demo), the tasks ``caption``,
``refcoco``, ``ocr``, ``unify_task``, the criteria ``adjust_label_smoothed_cross_entropy`` and
``scst_reward_criterion`` and the optimizer ``fused_adam``, and lets ``torch.load`` read the
released checkpoints' ``argparse.Namespace`` with ``weights_only=True`` (nothing else).
"""

from __future__ import annotations

__version__ = "0.1.0"


def register() -> None:
    """Register the model, tasks, criteria and optimizer with fairseq (imports fairseq and torch)."""
    from . import tasks  # noqa: F401  (registration happens on import)


def load(checkpoint, **options):
    """A ``Predictor`` for a checkpoint: ``ofa_cn.apps.inference.Predictor(checkpoint, **options)``.

    Options: task ("caption", "ground", "ocr"; default: the checkpoint's own), device, dtype
    ("float32" or "bfloat16"), exif, any_task, task_args. Imported on first use, so that
    ``import ofa_cn`` stays cheap.
    """
    from .apps.inference import Predictor

    return Predictor(checkpoint, **options)
