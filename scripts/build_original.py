"""Make a checkout of the original OFA (OFA-Sys/OFA) run on Python 3.11 and torch 2.13 (CPU), for
`scripts/benchmark.py --against PATH`, the same-run speed comparison of issue #22.

    git clone https://github.com/OFA-Sys/OFA /somewhere/OFA   # a36b91c or newer; nothing of it is in this repo
    python3.11 scripts/build_original.py /somewhere/OFA           # a few minutes on 2 cores
    .venv/bin/python scripts/benchmark.py --against /somewhere/OFA --rounds 3

What it does, each step skipped when already done (a second run changes nothing):

1. a virtual environment at PATH/.venv (this interpreter's Python) with the pins under which
   the original runs: torch 2.13.0, numpy 1.23.5 (the fork uses np.float), omegaconf 2.0.6 and
   hydra-core 1.0.7 (the fork's config code), setuptools < 81 (pkg_resources), torchvision
   0.28.0 (PIL transforms), pyarrow 17 + datasets 2.21 (numpy 1.x; `datasets.load_metric`),
   transformers 4 (the slow BertTokenizer of `--bpe bert`) and what the original imports at start-up
   (pytorch_lightning, timm, opencv, einops, ...). Nothing of the original is pip-installed: it runs
   from the checkout with PYTHONPATH=PATH/fairseq:PATH (`python_environment`). pip reads its usual
   configuration (PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS), e.g. to take torch's CPU build.
2. the fork's two Cython modules (`data_utils_fast`, `token_block_utils_fast`) compiled in place.
3. small edits, listed in PATCHES with the reason for each, to the checkout and to two installed
   packages; none changes what the model computes. An edit whose old text is not found (another
   commit of the original) stops the build with the file and the text it expected.

The benchmark's worker (`scripts/original_worker.py`) then runs the original's own model, criterion,
optimizer and sequence generator from that checkout.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

VENV = ".venv"
STAMP = ".ofa_cn_built"  # inside the venv: the pins were installed

# Pinned first, as a constraints file for every install below, so that no later package moves them.
PINS = ["torch==2.13.0", "numpy==1.23.5", "omegaconf==2.0.6", "hydra-core==1.0.7", "torchvision==0.28.0",
        "setuptools<81", "pyarrow==17.0.0", "datasets==2.21.0", "transformers==4.57.6",
        "opencv-python-headless==4.8.1.78", "antlr4-python3-runtime==4.8"]
# Installed without their dependencies: omegaconf 2.0.6 and hydra-core 1.0.7 declare `PyYAML>=5.1.*`,
# metadata newer pips refuse; torchvision 0.28.0 asks for the CUDA torch wheel (the CPU one is kept).
NO_DEPS = ["omegaconf==2.0.6", "hydra-core==1.0.7", "antlr4-python3-runtime==4.8", "torchvision==0.28.0"]
# What the fork and the original import when `--user-dir PATH/ofa_module` registers its tasks.
WITH_DEPS = ["torch==2.13.0", "numpy==1.23.5", "setuptools<81", "wheel", "cython>=3,<4", "PyYAML",
             "typing_extensions", "pillow", "cffi", "regex", "sacrebleu>=1.4.12,<3", "tqdm", "bitarray",
             "pyarrow==17.0.0", "datasets==2.21.0", "transformers==4.57.6", "pytorch_lightning", "timm",
             "opencv-python-headless==4.8.1.78", "einops", "ftfy", "editdistance", "six", "zhconv",
             "rouge_score", "pypinyin", "psutil"]
CYTHON_MODULES = ["fairseq/fairseq/data/data_utils_fast.pyx", "fairseq/fairseq/data/token_block_utils_fast.pyx"]


@dataclass(frozen=True)
class Patch:
    """Replace `old` by `new` in `path` (relative to the checkout, or `site:` + a path under the venv's
    site-packages); `why` is printed. Applied when `old` is there, skipped when `new` already is."""
    path: str
    old: str
    new: str
    why: str
    regex: bool = False  # `old` is a re pattern, `new` its replacement; done when nothing matches any more


MARK = "# ofa-cn build_original:"
PATCHES = [
    Patch("fairseq/fairseq/dataclass/configs.py",
          r"^(    \w+: (\w+Config)) = \2\(\)$", r"\1 = field(default_factory=\2)  " + MARK + " Python 3.11",
          "FairseqConfig's nested config defaults: Python 3.11 refuses mutable dataclass defaults",
          regex=True),
    Patch("fairseq/fairseq/models/transformer/transformer_config.py",
          r"^(    \w+: (\w+Config)) = \2\(\)$", r"\1 = field(default_factory=\2)  " + MARK + " Python 3.11",
          "TransformerConfig's encoder/decoder defaults, the same", regex=True),
    Patch("fairseq/fairseq/models/transformer/transformer_config.py",
          "field(default=QuantNoiseConfig())", "field(default_factory=QuantNoiseConfig)",
          "TransformerConfig's quant_noise default, the same"),
    Patch("fairseq/fairseq/dataclass/initialize.py",
          "        v = FairseqConfig.__dataclass_fields__[k].default\n",
          f"        {MARK} a default_factory field (the edit above) has no plain default\n"
          "        v = FairseqConfig.__dataclass_fields__[k]\n"
          "        v = v.default if v.default_factory is MISSING else v.default_factory()\n",
          "hydra_init: read the defaults that are now factories"),
    Patch("fairseq/fairseq/dataclass/initialize.py",
          "import logging\nfrom hydra.core.config_store import ConfigStore\n",
          f"import logging\nfrom dataclasses import MISSING  {MARK} hydra_init below\n"
          "from hydra.core.config_store import ConfigStore\n",
          "hydra_init: the MISSING marker"),
    Patch("tasks/__init__.py",
          "from .speech_tasks import *\n",
          f"try:  {MARK} the speech tasks need torchaudio, librosa, g2p_en: not used here\n"
          "    from .speech_tasks import *\nexcept ImportError:\n    pass\n",
          "the speech tasks' import made optional"),
    Patch("utils/checkpoint_utils.py",
          'state = torch.load(f, map_location=torch.device("cpu"))',
          'state = torch.load(f, map_location=torch.device("cpu"), weights_only=False)',
          "torch >= 2.6 loads weights only by default; the original's checkpoints pickle a Namespace"),
    Patch("fairseq/fairseq/checkpoint_utils.py",
          'state = torch.load(f, map_location=torch.device("cpu"))',
          'state = torch.load(f, map_location=torch.device("cpu"), weights_only=False)',
          "the same in the fork's own loader"),
    # hydra-core 1.0.7, installed: its own nested dataclass defaults (`hydra: HydraConf = HydraConf()`).
    Patch("site:hydra/conf/__init__.py",
          r"^( +\w+: (\w+)) = \2\(\)$", r"\1 = field(default_factory=\2)  " + MARK + " Python 3.11",
          "hydra-core 1.0.7: mutable dataclass defaults refused by Python 3.11", regex=True),
    # torchvision 0.28.0 from PyPI is built against the CUDA torch wheel: its C++ ops do not load into the
    # CPU build, and registering their fake (meta) kernels then fails. Only its PIL transforms are used.
    Patch("site:torchvision/__init__.py",
          "from . import extension  # usort:skip  # noqa: F401\n",
          "from . import extension  # usort:skip  # noqa: F401\n"
          f"{MARK} its C++ ops did not load (built for the CUDA torch): skip the fake kernels of them\n"
          "if not extension._has_ops():\n"
          "    import sys as _sys, types as _types\n"
          "    _sys.modules['torchvision._meta_registrations'] = _types.ModuleType('torchvision._meta_registrations')\n",
          "torchvision's CUDA-built ops on the CPU torch"),
]


def run(cmd: list[str], **kwargs) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kwargs)


def venv_python(checkout: Path) -> Path:
    return checkout / VENV / "bin" / "python"


def site_packages(checkout: Path) -> Path:
    out = subprocess.run([str(venv_python(checkout)), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         check=True, capture_output=True, text=True).stdout.strip()
    return Path(out)


def python_environment(checkout: Path) -> dict[str, str]:
    """The variables the original needs on top of os.environ: its fork and its own packages on the path;
    torch.load of its checkpoints (a pickled Namespace) allowed. Used by scripts/benchmark.py too."""
    checkout = Path(checkout).resolve()
    return {"PYTHONPATH": f"{checkout / 'fairseq'}{os.pathsep}{checkout}", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}


def check_checkout(checkout: Path) -> None:
    needed = ["fairseq/fairseq/__init__.py", "models/ofa/unify_transformer.py", "ofa_module/__init__.py",
              "utils/BERT_CN_dict/dict.txt", *CYTHON_MODULES]
    missing = [p for p in needed if not (checkout / p).is_file()]
    if missing:
        raise SystemExit(f"{checkout} is not a checkout of OFA-Sys/OFA: missing {missing}. "
                         "Clone https://github.com/OFA-Sys/OFA (a36b91c or newer) and pass its folder.")


def apply_patch(patch: Patch, root: Path) -> str:
    """Apply one patch under `root`. -> "applied" or "already applied"; SystemExit if neither text is there."""
    path = root / patch.path.removeprefix("site:")
    text = path.read_text(encoding="utf-8")
    if patch.regex:
        new_text, count = re.subn(patch.old, patch.new, text, flags=re.MULTILINE)
        if count:
            path.write_text(new_text, encoding="utf-8")
            return "applied"
        if MARK in text:
            return "already applied"
    else:
        if patch.new in text:
            return "already applied"
        if patch.old in text:
            path.write_text(text.replace(patch.old, patch.new), encoding="utf-8")
            return "applied"
    raise SystemExit(f"cannot patch {path}: expected {patch.old!r} (or the patched text) in it; this is not the "
                     f"file of OFA-Sys/OFA a36b91c or of the pinned package it was written for ({patch.why})")


def apply_patches(checkout: Path, site: Path | None) -> None:
    for patch in PATCHES:
        root = site if patch.path.startswith("site:") else checkout
        if root is None:
            continue
        print(f"patch {patch.path}: {apply_patch(patch, root)} ({patch.why})", flush=True)


def install(checkout: Path) -> None:
    venv = checkout / VENV
    if not venv_python(checkout).exists():
        run([sys.executable, "-m", "venv", venv])
    wanted = "\n".join(PINS + WITH_DEPS + NO_DEPS) + "\n"
    if (venv / STAMP).exists() and (venv / STAMP).read_text() == wanted:
        print(f"{venv}: the pinned packages are installed ({STAMP})")
        return
    constraints = venv / "ofa_cn_constraints.txt"
    constraints.write_text("\n".join(PINS) + "\n")
    pip = [venv_python(checkout), "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off",
           "-c", constraints]
    run([*pip, *WITH_DEPS])
    run([*pip, "--no-deps", *NO_DEPS])
    (venv / STAMP).write_text(wanted)


def build_cython(checkout: Path) -> None:
    """Compile the fork's two Cython modules in place, as C++ with numpy's headers (as its setup.py
    would, without its other, CUDA and torch, extensions)."""
    todo = [pyx for pyx in CYTHON_MODULES if not list((checkout / pyx).parent.glob(Path(pyx).stem + ".*.so"))]
    if not todo:
        print("the fork's Cython modules: already built")
        return
    names = [Path(pyx).relative_to("fairseq").with_suffix("").as_posix().replace("/", ".") for pyx in todo]
    sources = [Path(pyx).relative_to("fairseq").as_posix() for pyx in todo]
    code = ("import numpy; from setuptools import Extension, setup; from Cython.Build import cythonize; "
            f"setup(script_args=['build_ext', '--inplace'], ext_modules=cythonize(["
            f"Extension(n, [s], language='c++', include_dirs=[numpy.get_include()], extra_compile_args=['-O3']) "
            f"for n, s in zip({names!r}, {sources!r})], language_level=3))")
    run([venv_python(checkout), "-c", code], cwd=checkout / "fairseq")


def check_import(checkout: Path) -> None:
    """Import the original as the benchmark's worker does: the fork, then --user-dir ofa_module."""
    code = ("import fairseq, torch; from fairseq import utils; "
            f"utils.import_user_module(type('A', (), {{'user_dir': {str(checkout / 'ofa_module')!r}}})()); "
            "from fairseq.data import data_utils_fast, token_block_utils_fast; "
            "print('ok: the original imports; torch', torch.__version__, 'fairseq fork', fairseq.__version__)")
    run([venv_python(checkout), "-c", code], env={**os.environ, **python_environment(checkout)}, cwd=checkout)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkout", type=Path, help="a checkout of OFA-Sys/OFA (git clone)")
    parser.add_argument("--patch-only", action="store_true", help="only apply the edits to the checkout")
    args = parser.parse_args(argv)
    checkout = args.checkout.resolve()
    check_checkout(checkout)
    if sys.version_info[:2] != (3, 11):
        raise SystemExit(f"run this with Python 3.11 (the venv takes this interpreter's version), not "
                         f"{sys.version.split()[0]}")
    if args.patch_only:
        apply_patches(checkout, None)
        return
    install(checkout)
    apply_patches(checkout, site_packages(checkout))
    build_cython(checkout)
    check_import(checkout)


if __name__ == "__main__":
    main()
