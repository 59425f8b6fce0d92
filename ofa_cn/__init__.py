"""OFA-CN as a fairseq plugin: ``--user-dir ofa_cn`` (or ``import ofa_cn``) registers everything."""
