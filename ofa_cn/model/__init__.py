"""The OFA-CN model: plain torch modules, plus the fairseq model in ofa.py."""

from .config import ARCHITECTURES, OFAConfig, config_for_arch

__all__ = ["ARCHITECTURES", "OFAConfig", "config_for_arch"]
