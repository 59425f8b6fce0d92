"""The registered OFA-CN tasks (imported by ofa_cn/__init__.py)."""

from .caption import CaptionTask
from .grounding import RefcocoTask
from .ocr import OCRTask
from .pretrain import UnifyTask

__all__ = ["CaptionTask", "RefcocoTask", "OCRTask", "UnifyTask"]
