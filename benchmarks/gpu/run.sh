#!/usr/bin/env bash
# The GPU benchmarks in one prepared call: short parts first, each part
# under its own time budget, each writing its results as soon as it ends.
#
#   bash benchmarks/gpu/run.sh --download          # with network: wheels -> .whl/
#   bash benchmarks/gpu/run.sh --download --dry-run  # the pip commands only
#   bash benchmarks/gpu/run.sh --dry-run           # print the plan only
#   bash benchmarks/gpu/run.sh [--archive FILE] [RESULTS_DIR]
#
# Parts, in order (PARTS reorders or selects; BACKENDS filters by backend):
#   recalibrate_jax  benchmarks/speed_recalibrate.py, ResNet50 224: predict,
#                    its floor (the training-mode forward loop), recalibrate
#                    and audit over the same images, interleaved
#   recalibrate_torch  the same on torch
#   gap              benchmarks/gap.py on 3 seeds side by side, one folder
#                    each, via benchmarks/gpu/gap_seeds.py (GAP_BACKEND,
#                    GAP_ARGS); a --full run without scikit-image falls
#                    back LOUDLY
#   speed_jax        benchmarks/speed.py, JAX, 224x224 batch 64: stock,
#                    Keras trainable=False, frozenbn (gamma/beta trained and
#                    frozen), fuse, the folded floor, with the check that
#                    compilation stayed out of the timed samples and the
#                    compiled step's kernels, FLOPs and bytes per arm;
#                    inference unfolded vs fold; peak memory per arm (one
#                    process each, side by side)
#   speed_torch      speed.py on torch, plus the torchvision ResNet50
#                    FrozenBatchNorm2d peer
# A part's budget is its share (SHARES) of the time left before the
# deadline (TOTAL_S after the start, less what the setup took), so time a
# part leaves unused goes to the parts after it; a part whose budget falls
# under MIN_PART_S is skipped. `timeout` stops a part at its budget; speed.py
# and gap_seeds.py write after every section or seed, so what finished is kept.
# After every part the results folder is packed into the --archive file
# (written whole, then renamed), which is what comes back from the device.
#
# Results go to RESULTS_DIR (default benchmarks/results/gpu), with
# run.log, one log per part, parts.tsv (budget, seconds, exit code per
# part), nvidia-smi.txt, environment_<backend>.json and summary.md.
# TINY=1 runs every part at a smoke-test size: check the script on a CPU
# before spending GPU time. SPEED_ARGS, RECAL_ARGS and GAP_ARGS replace a
# part's arguments. See benchmarks/gpu/README.md for the device call.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WHEELS="${WHEELS:-$ROOT/.whl}"
# What the GPU image lacks: keras (the version CI tests) and two of its
# requirements, and scikit-image (gap.py --full cuts its data from its
# sample photographs) with the requirements of it that the image lacks
# (the versions the CPU machine runs; the image has numpy, scipy, pillow).
KERAS_PIN="$(sed -n 's/^keras==//p' "$ROOT/.ci/constraints.txt")"
PACKAGES="${PACKAGES:-keras==$KERAS_PIN namex==0.1.0 optree==0.20.0 scikit-image==0.26.0 imageio==2.38.1 tifffile==2026.3.3 networkx==3.6.1 lazy-loader==0.6}"

TOTAL_S="${TOTAL_S:-560}"  # TINY=1 on a CPU: TOTAL_S=840 (see the README)
MIN_PART_S="${MIN_PART_S:-20}"
SETUP_S=90     # at most, for installing wheels and reading the machine
RESERVE_S=15   # kept at the end for the summary and the last archive
TINY="${TINY:-0}"
PARTS="${PARTS:-recalibrate_jax recalibrate_torch gap speed_jax speed_torch}"
BACKENDS="${BACKENDS:-jax torch}"
GAP_BACKEND="${GAP_BACKEND:-jax}"
GAP_SEEDS="${GAP_SEEDS:-0,1,2}"
# Percent of the time left that each part may take (of the parts still
# to run, so the shares of skipped or finished parts are handed on).
declare -A SHARES=([recalibrate_jax]=12 [recalibrate_torch]=10 [gap]=48
                   [speed_jax]=38 [speed_torch]=6)

# frozenbn_trainable_false does Keras trainable=False's work in frozenbn's
# layer: it separates the cost of the gamma/beta gradients from the rest.
ARMS=stock,keras_trainable_false,frozenbn,frozenbn_trainable_false,fused,folded
if [[ "$TINY" == 1 ]]; then
    SPEED_ARGS="${SPEED_ARGS:---tiny --arms $ARMS --warmup 2 --memory-arms frozenbn,fused --memory-jobs 2 --skip convert}"
    RECAL_ARGS="${RECAL_ARGS:---model mini --image-size 16 --images 64 --batch-size 16 --repeats 2}"
    GAP_ARGS="${GAP_ARGS:---tiny --arms stock,frozenbn}"
else
    # Steps, not repeats, fill a sample: a GPU step of ResNet50 at batch 64
    # is tens of milliseconds, and compiling each arm costs far more than
    # timing it. Two warm-up samples: the second shows whether the first
    # left anything to compile. convert is Python work, measured on CPUs.
    SPEED_ARGS="${SPEED_ARGS:---image-size 224 --batch-size 64 --steps 10 --repeats 5 --warmup 2 --arms $ARMS --memory-arms $ARMS --memory-jobs 6 --skip convert}"
    RECAL_ARGS="${RECAL_ARGS:---image-size 224 --images 1024 --batch-size 64 --repeats 5}"
    GAP_ARGS="${GAP_ARGS:---small --arms stock,stock_recalibrated,frozenbn,keras_bn_frozen}"
fi

usage() {
    sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

MODE=run
DRY=0
ARCHIVE=""
RES=""
while (($#)); do
    case "$1" in
        --download) MODE=download ;;
        --dry-run) DRY=1 ;;
        --archive)
            [[ $# -ge 2 ]] || { echo "--archive needs a file" >&2; exit 2; }
            ARCHIVE="$2"
            shift
            ;;
        -h | --help) usage; exit 0 ;;
        -*) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
        *) RES="$1" ;;
    esac
    shift
done
RES="${RES:-$ROOT/benchmarks/results/gpu}"

if [[ $MODE == download ]]; then
    # One call per package so that --no-deps fetches exactly this list;
    # the platform tags cover the manylinux flavours optree and
    # scikit-image publish (the GPU image runs CPython 3.12).
    for pkg in $PACKAGES; do
        cmd=(python3 -m pip download --no-deps --only-binary=:all:
             --python-version 3.12 --implementation cp
             --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
             --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
             --platform manylinux1_x86_64 -d "$WHEELS" "$pkg")
        if [[ $DRY == 1 ]]; then
            echo "download: ${cmd[*]}"
        else
            mkdir -p "$WHEELS" && "${cmd[@]}" || exit 1
        fi
    done
    [[ $DRY == 1 ]] && exit 0
    ls -l "$WHEELS"
    echo "Requirements of keras (check each is on the GPU image):"
    unzip -p "$WHEELS"/keras-*.whl '*/METADATA' | grep '^Requires-Dist' \
        | grep -v extra
    exit 0
fi

[[ "$TOTAL_S" =~ ^[0-9]+$ ]] || { echo "TOTAL_S must be seconds: $TOTAL_S" >&2; exit 2; }
for part in $PARTS; do
    [[ -n "${SHARES[$part]:-}" ]] || {
        echo "unknown part: $part (known: ${!SHARES[*]})" >&2
        exit 2
    }
done

part_backend() {
    case "$1" in
        *_jax) echo jax ;;
        *_torch) echo torch ;;
        gap) echo "$GAP_BACKEND" ;;
    esac
}

# The command of a part, as words (KERAS_BACKEND is set by the caller).
part_command() {
    case "$1" in
        speed_jax) echo "python3 benchmarks/speed.py $SPEED_ARGS --out $RES" ;;
        speed_torch) echo "python3 benchmarks/speed.py $SPEED_ARGS --torchvision-peer --out $RES" ;;
        recalibrate_*) echo "python3 benchmarks/speed_recalibrate.py $RECAL_ARGS --out $RES" ;;
        gap) echo "python3 benchmarks/gpu/gap_seeds.py --seeds $GAP_SEEDS --jobs 3 --out $RES -- $GAP_ARGS" ;;
    esac
}

# The parts that will run: those named in PARTS whose backend is wanted.
TODO=()
for part in $PARTS; do
    if [[ " $BACKENDS " == *" $(part_backend "$part") "* ]]; then
        TODO+=("$part")
    fi
done

# Budget of part i when `left` seconds remain: its share of what the
# parts i.. still to run share between them.
budget_of() {
    local i=$1 left=$2 sum=0 j
    for ((j = i; j < ${#TODO[@]}; j++)); do
        sum=$((sum + SHARES[${TODO[j]}]))
    done
    echo $((left * SHARES[${TODO[i]}] / sum))
}

print_plan() {
    local left=$((TOTAL_S - SETUP_S - RESERVE_S)) i b
    echo "plan: TOTAL_S=$TOTAL_S s (setup up to $SETUP_S s, $RESERVE_S s kept" \
        "for the end), TINY=$TINY, results in $RES${ARCHIVE:+, archive $ARCHIVE}"
    echo "budgets if every part used all of its own (a part that ends early" \
        "hands its time on):"
    for ((i = 0; i < ${#TODO[@]}; i++)); do
        b=$(budget_of "$i" "$left")
        printf '  part %-16s backend %-6s budget %4d s: KERAS_BACKEND=%s %s\n' \
            "${TODO[i]}" "$(part_backend "${TODO[i]}")" "$b" \
            "$(part_backend "${TODO[i]}")" "$(part_command "${TODO[i]}")"
        left=$((left - b))
    done
    ((${#TODO[@]})) || echo "  (no part: PARTS=$PARTS, BACKENDS=$BACKENDS)"
}

if [[ $DRY == 1 ]]; then
    print_plan
    exit 0
fi

START=$(date +%s)
DEADLINE=$((START + TOTAL_S))
mkdir -p "$RES" || exit 1
cd "$ROOT" || exit 1
exec > >(tee -a "$RES/run.log") 2>&1
rm -f "$RES/parts.tsv"

pack() {
    [[ -n "$ARCHIVE" ]] || return 0
    tar -czf "$ARCHIVE.tmp" -C "$RES" . && mv -f "$ARCHIVE.tmp" "$ARCHIVE"
}

echo "== $(date -u +%FT%TZ) start, deadline in $TOTAL_S s"
print_plan
echo "== machine"
if command -v nvidia-smi >/dev/null; then
    {
        nvidia-smi
        nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit \
            --format=csv
    } >"$RES/nvidia-smi.txt" 2>&1
    tail -2 "$RES/nvidia-smi.txt"
else
    echo "no nvidia-smi: not a GPU machine (fine for TINY=1)" | tee "$RES/nvidia-smi.txt"
fi
python3 --version

if compgen -G "$WHEELS/*.whl" >/dev/null; then
    echo "== install wheels from $WHEELS (no index)"
    SITE=/tmp/frozenbn-site
    timeout 120 python3 -m pip install -q --no-index --no-deps --no-compile \
        --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl || exit 1
    export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
else
    echo "== no wheels in $WHEELS: using the installed keras"
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
# JAX must not reserve 75% of the card up front: speed.py's memory arms
# run in child processes beside their parent. The persistent compilation
# cache lets those children, and gap.py's second seed, reuse compiled steps.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-/tmp/frozenbn-jax-cache}"

require=""
[[ "$TINY" == 1 ]] || require=--require-gpu
declare -A NO_GPU=()
for backend in $BACKENDS; do
    KERAS_BACKEND=$backend timeout 90 python3 benchmarks/gpu/environment.py \
        "$RES/environment_$backend.json" $require
    case $? in
        0) ;;
        3) NO_GPU[$backend]=1 ;;
        *) echo "the $backend environment check failed: stopping"; exit 1 ;;
    esac
done
pack

status=0
for ((i = 0; i < ${#TODO[@]}; i++)); do
    part=${TODO[i]}
    backend=$(part_backend "$part")
    left=$((DEADLINE - $(date +%s) - RESERVE_S))
    budget=$(budget_of "$i" "$left")
    if [[ -n "${NO_GPU[$backend]:-}" ]]; then
        echo "== part $part: skipped ($backend sees no GPU)"
        printf '%s\t%s\t%s\t0\t-\tskipped: no GPU\n' "$part" "$backend" "$budget" >>"$RES/parts.tsv"
        continue
    fi
    if ((budget < MIN_PART_S)); then
        echo "== part $part: skipped (budget $budget s < MIN_PART_S=$MIN_PART_S)"
        printf '%s\t%s\t%s\t0\t-\tskipped: no time\n' "$part" "$backend" "$budget" >>"$RES/parts.tsv"
        continue
    fi
    cmd=$(part_command "$part")
    echo "== $(date -u +%T) part $part: budget $budget s of $left s left"
    echo "   KERAS_BACKEND=$backend $cmd  (log: $part.log)"
    t0=$(date +%s)
    # shellcheck disable=SC2086
    KERAS_BACKEND=$backend timeout --kill-after=10 "$budget" $cmd \
        >"$RES/$part.log" 2>&1
    rc=$?
    took=$(($(date +%s) - t0))
    case $rc in
        0) what=done ;;
        124 | 137) what="stopped at its budget (partial results kept)"; status=1 ;;
        *) what="failed"; status=1 ;;
    esac
    echo "   $what: exit $rc after $took s"
    [[ $rc == 0 ]] || tail -n 15 "$RES/$part.log" | sed 's/^/   | /'
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$part" "$backend" "$budget" "$took" "$rc" "$what" >>"$RES/parts.tsv"
    pack
done

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.used,clocks.sm,temperature.gpu \
    --format=csv >>"$RES/nvidia-smi.txt" 2>&1
echo "== $(date -u +%T) summary ($(($(date +%s) - START)) s in all)"
KERAS_BACKEND=${BACKENDS%% *} timeout 60 python3 benchmarks/gpu/summary.py "$RES" || status=1
ls -l "$RES"
pack
exit $status
