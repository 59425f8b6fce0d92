#!/usr/bin/env bash
# Download released OFA-CN checkpoints (the list in checkpoints.md), resuming partial downloads.
#
#   bash scripts/download_checkpoints.sh --list                     names, one per line
#   bash scripts/download_checkpoints.sh ofa_cn_base caption_cn_base
#   bash scripts/download_checkpoints.sh --dir /ckpt all            every checkpoint, into /ckpt
#
# NAME is a name from --list, with or without ".pt", or "all". Files go to --dir (default:
# checkpoints/ under the current directory) as NAME.pt; a download in progress is NAME.pt.part and
# is continued by the next run (curl -C - or wget -c). A file counts as complete when
#   * its size equals the server's Content-Length (when the server sends one),
#   * its size and sha256 equal the values recorded below (when recorded; none are yet: the files
#     were never downloaded while this script was written, so the script prints the sha256 of
#     each file it completes, for you to compare and record),
#   * and it is not an HTML/XML error page saved under the checkpoint's name.
# Checkpoints already complete are not downloaded again. The exit status is 1 if any name failed,
# and the failures are listed at the end; 2 for a usage error.
set -uo pipefail

# The original's download location; OFA_CN_CHECKPOINT_URL points at a mirror instead.
BASE_URL="${OFA_CN_CHECKPOINT_URL:-https://ofa-beijing.oss-cn-beijing.aliyuncs.com/checkpoints}"
# name -> "bytes sha256" of the released file; "-" where not known.
declare -A KNOWN=(
    [ofa_cn_base]="- -"
    [ofa_cn_large]="- -"
    [caption_cn_base]="- -"
    [caption_cn_large]="- -"
    [refcoco_cn_base]="- -"
    [refcoco_cn_large]="- -"
    [refcocoplus_cn_base]="- -"
    [refcocoplus_cn_large]="- -"
    [refcocog_cn_base]="- -"
    [refcocog_cn_large]="- -"
    [ofa_cn_ocr_base]="- -"
    [ofa_cn_ocr_large]="- -"
)
NAMES=(ofa_cn_base ofa_cn_large caption_cn_base caption_cn_large refcoco_cn_base refcoco_cn_large
       refcocoplus_cn_base refcocoplus_cn_large refcocog_cn_base refcocog_cn_large
       ofa_cn_ocr_base ofa_cn_ocr_large)

usage() {
    echo "usage: $0 [--dir DIR] NAME... | all      (names: $0 --list)" >&2
    exit 2
}

file_size() { stat -c %s "$1" 2>/dev/null || stat -f %z "$1"; }

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
    else shasum -a 256 "$1" | cut -d' ' -f1; fi
}

# The Content-Length of the final response (after redirects) if it is a success, or nothing.
remote_size() {
    local headers
    if command -v curl >/dev/null 2>&1; then
        headers="$(curl -sIL --retry 3 "$1" 2>/dev/null)"
    else
        headers="$(wget -q --spider -S "$1" 2>&1)"
    fi
    printf '%s\n' "$headers" | tr -d '\r' | awk '
        $1 ~ /^HTTP\// {code = $2; n = ""}
        tolower($1) == "content-length:" {n = $2}
        END {if (code ~ /^2/) print n}'
}

fetch() {  # fetch URL PART: continue PART where it stopped
    if command -v curl >/dev/null 2>&1; then
        curl -fL --retry 5 --retry-delay 5 -C - -o "$2" "$1"
    elif command -v wget >/dev/null 2>&1; then
        wget -c --tries=5 -O "$2" "$1"
    else
        echo "neither curl nor wget is installed" >&2
        return 1
    fi
}

# check FILE NAME REMOTE_SIZE: print why FILE is not the complete checkpoint, or nothing.
check() {
    local file="$1" name="$2" remote="$3" size want_size want_sha got_sha
    size="$(file_size "$file")"
    read -r want_size want_sha <<< "${KNOWN[$name]}"
    if [ -n "$remote" ] && [ "$size" != "$remote" ]; then
        echo "size $size bytes, but the server sends $remote"; return
    fi
    if [ "$want_size" != "-" ] && [ "$size" != "$want_size" ]; then
        echo "size $size bytes, but the released file has $want_size"; return
    fi
    if head -c 64 "$file" | LC_ALL=C grep -Eqi '^[[:space:]]*<(\?xml|!doctype|html|error)'; then
        echo "it is an HTML/XML page (an error from the server), not a checkpoint"; return
    fi
    if [ "$want_sha" != "-" ]; then
        got_sha="$(sha256_of "$file")"
        [ "$got_sha" = "$want_sha" ] || echo "sha256 $got_sha, but the released file has $want_sha"
    fi
}

dir="checkpoints"
requested=()
while [ "$#" -gt 0 ]; do
    case "$1" in
        --list) printf '%s\n' "${NAMES[@]}"; exit 0 ;;
        --dir) [ "$#" -ge 2 ] || usage; dir="$2"; shift 2 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        -*) echo "unknown option $1" >&2; usage ;;
        all) requested+=("${NAMES[@]}"); shift ;;
        *) requested+=("${1%.pt}"); shift ;;
    esac
done
[ "${#requested[@]}" -gt 0 ] || usage
for name in "${requested[@]}"; do
    if [ -z "${KNOWN[$name]+set}" ]; then
        echo "unknown checkpoint '$name'; known names: ${NAMES[*]}" >&2
        exit 2
    fi
done
mkdir -p "$dir" || exit 1

failed=()
for name in "${requested[@]}"; do
    url="$BASE_URL/$name.pt"
    target="$dir/$name.pt"
    part="$target.part"
    remote="$(remote_size "$url")"
    if [ -f "$target" ]; then
        problem="$(check "$target" "$name" "$remote")"
        if [ -z "$problem" ]; then
            echo "== $name: already complete ($target)"
            continue
        fi
        echo "== $name: $target is not complete ($problem); downloading again"
        mv -f "$target" "$part"  # resume from it if it is a prefix, else the size check below says so
    fi
    echo "== $name: $url -> $target${remote:+ ($remote bytes)}"
    if [ -n "$remote" ] && [ -f "$part" ] && [ "$(file_size "$part")" -gt "$remote" ]; then
        rm -f "$part"  # longer than the file on the server: not a prefix of it
    fi
    if [ -n "$remote" ] && [ -f "$part" ] && [ "$(file_size "$part")" = "$remote" ]; then
        :  # already all there (asking to resume past the end makes the server answer 416)
    else
        fetch "$url" "$part"
        status=$?
        if [ "$status" -ne 0 ]; then
            if [ "$status" -eq 22 ] || [ "$status" -eq 8 ]; then  # curl / wget: the server said no
                failed+=("$name: the server answered $url with an HTTP error (moved or removed?)")
            else
                failed+=("$name: download of $url stopped (exit status $status); run again to resume")
            fi
            continue
        fi
    fi
    problem="$(check "$part" "$name" "$remote")"
    if [ -n "$problem" ]; then
        failed+=("$name: $part is not the checkpoint: $problem. Delete it and run again")
        continue
    fi
    mv -f "$part" "$target"
    echo "== $name: done, $(file_size "$target") bytes, sha256 $(sha256_of "$target")"
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "FAILED (${#failed[@]} of ${#requested[@]}):" >&2
    printf '  %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "all ${#requested[@]} checkpoint(s) in $dir"
