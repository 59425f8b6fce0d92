"""Training plug-ins for fairseq: the criteria, SCST, the fused optimizer, the learning-rate option, malloc tuning and crash-safe checkpoint files (registered by importing `ofa_cn.tasks`)."""
