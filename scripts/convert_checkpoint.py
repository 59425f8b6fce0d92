#!/usr/bin/env python
"""Write a checkpoint's weights as safetensors and its configs as JSON (and check the round trip).

    python scripts/convert_checkpoint.py ofa_cn_base.pt exported/ofa_cn_base

`ofa_cn.checkpoints.formats.load_pretrained("exported/ofa_cn_base")` reads the folder back into an
identical model; the script verifies that before it exits.
"""

from __future__ import annotations

import argparse
import logging
import sys

import torch

from ofa_cn.checkpoints.formats import export_checkpoint, load_exported, load_pretrained


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a released .pt (original layout) or one of ours")
    p.add_argument("out_dir", help="folder for model.safetensors and config.json")
    p.add_argument("--no-verify", action="store_true", help="skip reading the export back")
    p.add_argument("--overwrite", action="store_true", help="replace the files of a non-empty out_dir")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        out = export_checkpoint(args.checkpoint, args.out_dir, overwrite=args.overwrite)
    except ValueError as e:
        sys.exit(f"convert_checkpoint.py: error: {e}")
    if not args.no_verify:
        original, _ = load_pretrained(args.checkpoint)
        again, _ = load_exported(out)
        for (name, a), b in zip(original.state_dict().items(), again.state_dict().values()):
            if not torch.equal(a, b):
                sys.exit(f"round trip changed {name}; please report this")
    logging.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
