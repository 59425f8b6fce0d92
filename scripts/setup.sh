#!/usr/bin/env bash
# One pinned install of ofa-cn into .venv/ at the repository root.
#
#   bash scripts/setup.sh          (make calls it through the stamp file .venv/.installed)
#
# Order matters: fairseq-fixed compiles its C++/Cython extensions against the torch and numpy
# that are already in the venv (--no-build-isolation), so those come first.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
python="${OFA_CN_PYTHON:-python3.11}"

if ! command -v "$python" >/dev/null 2>&1; then
    echo "setup.sh: $python not found; ofa-cn needs Python 3.11 (set OFA_CN_PYTHON to its path)." >&2
    exit 1
fi

echo "== ofa-cn setup: venv at $venv"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --disable-pip-version-check --progress-bar off)

echo "== [1/5] torch (pinned: the CPU build, a wheel on this machine's disk)"
"${pip[@]}" "torch==2.13.0"

echo "== [2/5] build tools for fairseq's extensions"
"${pip[@]}" "numpy>=1.26,<2.0" "cython>=3.0,<4" "setuptools>=68,<80" "wheel"

echo "== [3/5] fairseq-fixed 0.12.3.1 (upstream fairseq 0.12 + Python 3.11 dataclass fix)"
# --no-deps: its metadata asks for torchaudio, which nothing here uses and whose wheels are built
# for other torch releases; the rest of its list is installed explicitly first. scikit-learn looks
# unneeded but is not: `import fairseq` imports every criterion and task, and two of them
# (criterions/sentence_prediction.py, tasks/audio_classification.py) import sklearn.
"${pip[@]}" "cffi" "hydra-core==1.3.2" "omegaconf==2.3.0" "regex" "sacrebleu>=2.3,<3" "tqdm" \
    "bitarray" "scikit-learn" "packaging"
if ! "$venv/bin/python" -c "import fairseq" >/dev/null 2>&1; then
    "${pip[@]}" --no-build-isolation --no-deps "fairseq-fixed==0.12.3.1"
fi

echo "== [4/5] Debian packages: a CJK font for the demo's OCR cards (fonts-wqy-microhei, 5 MB) and"
echo "         chromium, in which a test opens the demo's report page (headless)"
missing=()
[ -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || missing+=(fonts-wqy-microhei)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "setup.sh: install as root: apt-get install -y ${missing[*]} (the font can also be set with OFA_CN_DEMO_FONT)" >&2
    fi
fi

echo "== [5/5] ofa-cn's own run-time dependencies (the pins of pyproject.toml), then ofa-cn itself"
# torch, numpy, fairseq-fixed, hydra-core, omegaconf and sacrebleu are in place from the steps above.
"${pip[@]}" "pillow>=10,<13" "jieba==0.42.1" "pycocoevalcap==1.2" "tensorboard>=2.14,<3" \
    "safetensors>=0.4,<1" "zhconv==1.4.3" "tqdm>=4.60"
# --no-deps: tokenizers declares huggingface-hub, which only its Tokenizer.from_pretrained uses;
# ofa_cn.tokenizer builds the tokenizer from the packaged vocab.txt and never imports it.
"${pip[@]}" --no-deps "tokenizers>=0.19,<1"
# --no-deps: pip would otherwise read pyproject's list again and resolve fairseq-fixed's metadata,
# torchaudio included. Everything it lists is installed above or below.
"${pip[@]}" --no-deps -e "$root"
# A venv made by an earlier setup.sh (which resolved that metadata) has torchaudio, a binary built for
# another torch: remove it, so that an old venv ends up as a new one does.
if "$venv/bin/python" -m pip show torchaudio >/dev/null 2>&1; then
    "$venv/bin/python" -m pip uninstall --disable-pip-version-check -y -q torchaudio
fi

echo "== [5b/5] dev dependencies (pyproject's dev extras): tests, the OCR converter's lmdb, and"
echo "          ModelScope's OFA code for the migration tests, without touching torch/numpy"
"${pip[@]}" "pytest>=8,<10" "pytest-timeout>=2.2" "lmdb>=1.4"
# --no-deps: the smallest set that lets modelscope's OFA model, tokenizer and generator import and
# run (tests/test_modelscope.py); the full lists would add transformers' kernels and typer, which
# that code never imports.
#   modelscope        the OFA model, tokenizer and generator under test
#   transformers      their base classes (5.x: the release that fits tokenizers 0.23)
#   huggingface-hub   a dev dependency, not a run-time one: transformers imports it (and its HTTP
#                     client, httpx2) on import and checks its version (>=2.4,<3), so it is resolved
#                     with its own dependencies here
#   modelscope-hub    imported by `import modelscope`; it needs requests (+urllib3, certifi,
#                     charset-normalizer, idna) and cryptography
#   addict            imported by modelscope.utils.config, undeclared by modelscope
"${pip[@]}" "huggingface-hub>=2.4,<3"
"${pip[@]}" --no-deps "modelscope==1.40.2" "transformers==5.25.0" "modelscope-hub==0.5.1" "addict==2.4.0" \
    "requests>=2.28" "urllib3>=1.26" "certifi" "charset-normalizer" "idna" "cryptography>=41"

"$venv/bin/python" - <<'PY'
import fairseq, torch
import ofa_cn.tasks  # registers the plugin with fairseq
print(f"ok: torch {torch.__version__}, fairseq {fairseq.__version__}")
PY
touch "$venv/.installed"
