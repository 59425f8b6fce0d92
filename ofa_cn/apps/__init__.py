"""What users run: the `ofa-cn` CLI, the Python `Predictor`, TSV evaluation, and their input/output helpers. Apps import `ofa_cn.checkpoints.loading`, never each other's loaders."""
