"""Data layer: TSV rows -> per-task samples -> one collated batch (see ``base.py`` and ``collate.py``)."""

from .caption import CaptionDataset
from .collate import collate
from .errors import DataError
from .grounding import GroundingDataset
from .ocr import OCRDataset
from .tsv import TSVFile

__all__ = ["CaptionDataset", "DataError", "GroundingDataset", "OCRDataset", "TSVFile", "collate"]
