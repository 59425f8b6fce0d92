"""Import fairseq without letting it configure the application's logging.

Importing fairseq's models and tasks calls ``logging.basicConfig`` (at DEBUG in
``models/wav2vec/wav2vec2_classification.py``, at INFO in ``tasks/text_to_speech.py``), which puts a
stderr handler on the root logger: every library's debug lines (PIL's, for each image opened) and
fairseq's "Please install tensorboardX" notice then reach the user of a Python API. ``basicConfig``
does nothing when the root logger already has a handler, so one is held there during the import.
"""

from __future__ import annotations

import logging


def import_fairseq() -> None:
    """Import ``fairseq.models`` and ``fairseq.tasks`` (once) with the root logger left as it was."""
    root = logging.getLogger()
    placeholder = logging.NullHandler()
    root.addHandler(placeholder)
    try:
        import fairseq.models  # noqa: F401
        import fairseq.tasks  # noqa: F401
    finally:
        root.removeHandler(placeholder)
