# Sourced by scripts/eval_*.sh: checks the arguments and runs scripts/evaluate.py with the task's
# published settings (the array SETTINGS, set by the caller), then the user's own flags, which win
# (argparse keeps the last value of a flag).
run_evaluate() {
    if [ "$#" -lt 3 ]; then
        echo "usage: $0 CHECKPOINT DATA_TSV OUT_DIR [evaluate.py flags]" >&2
        exit 2
    fi
    local root python checkpoint="$1" data="$2" out_dir="$3"
    shift 3
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    python="${PYTHON:-$root/.venv/bin/python}"  # the venv of scripts/setup.sh unless PYTHON is set
    exec "$python" "$root/scripts/evaluate.py" --checkpoint "$checkpoint" --data "$data" --out-dir "$out_dir" \
        "${SETTINGS[@]}" "$@"
}
