"""``ofa-cn prepare SOURCE``: public raw datasets (and your own folders) -> the TSVs the tasks read.

One module per source: ``muge`` (MUGE captions), ``refcoco`` (the refer toolkit's RefCOCO files
plus your Chinese translations), ``lmdb`` (text-recognition LMDBs) and ``folder`` (images plus a
JSON-lines label file, for any task). Each streams its input, checks every row, writes the TSV
atomically and reports skipped records by reason (``common.py``). ``cli.py`` holds the
command-line flags. Imported on demand: ``import ofa_cn`` does not load these modules.
"""
