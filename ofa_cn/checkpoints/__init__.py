"""Checkpoint files: the released .pt layout, our exported folders, ModelScope folders, and the one loading boundary (`loading.py`) the apps use."""
