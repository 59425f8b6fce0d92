"""Write the seeded demo dataset (caption, grounding and OCR TSV files plus manifest.json).

    python scripts/make_demo_data.py --out demo_out/data [--seed 0] [--train 3000] [--valid 100] [--test 200]
    python scripts/make_demo_data.py --out binding --seed 1 --train 24000 --tasks matching_2colours,grounding_2colours
                                     (the rows of the binding experiments: ofa_cn/demo/data/binding.py, README)

Does nothing if --out already holds a complete dataset with the same settings, unless --force.
OCR needs a CJK font: `apt-get install -y fonts-wqy-microhei` (or set $OFA_CN_DEMO_FONT / --font).
"""

import argparse
import logging

from ofa_cn.demo.data import TASKS, generate_dataset
from ofa_cn.demo.data.binding import BINDING_TASKS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="directory for the TSV files and manifest.json")
    parser.add_argument("--seed", type=int, default=0, help="same seed, byte-identical files")
    parser.add_argument("--train", type=int, default=3000, help="rows per task in the train split")
    parser.add_argument("--valid", type=int, default=100, help="rows per task in the valid split")
    parser.add_argument("--test", type=int, default=200, help="rows per task in the test split")
    parser.add_argument("--font", help="CJK font file for OCR images (default: a known system font path)")
    parser.add_argument("--workers", type=int, help="processes to draw samples with (default: CPU cores)")
    parser.add_argument("--force", action="store_true", help="regenerate even if the dataset is complete")
    parser.add_argument("--tasks", default=",".join(TASKS),
                        help=f"comma-separated, of {', '.join(TASKS + tuple(BINDING_TASKS))} (default: the first three)")
    args = parser.parse_args(argv)

    # force: importing fairseq (through ofa_cn) may already have configured the root logger
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    generate_dataset(
        args.out,
        seed=args.seed,
        counts={"train": args.train, "valid": args.valid, "test": args.test},
        font=args.font,
        force=args.force,
        workers=args.workers,
        tasks=tuple(args.tasks.split(",")),
    )


if __name__ == "__main__":
    main()
