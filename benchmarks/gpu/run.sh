#!/usr/bin/env bash
# Runs the frozenbn benchmarks on a GPU machine that has no package index.
#
# Prepare the wheel bundle on a machine with pip access (see README.md):
#     bash benchmarks/gpu/run.sh --download
# Then, on the GPU machine, from the repository root, with .whl/ carried:
#     bash benchmarks/gpu/run.sh [OUT_DIR]
# BACKENDS="jax torch" and BENCHES="gap speed" (the defaults) choose what
# runs, so that each fits in one 10-minute device command; SPEED_ARGS
# overrides the speed.py arguments; TINY=1 runs everything at a tiny size
# (use it on a CPU to check the script end to end).
#
# It installs the wheels with --no-index into a private target folder, then
# runs benchmarks/gap.py (full size) and benchmarks/speed.py (224x224,
# batch 64; its modules benchmarks/speed_*.py come along) under
# KERAS_BACKEND=jax, then torch; the torch run adds the
# torchvision FrozenBatchNorm2d peer. Results go to OUT_DIR (default
# benchmarks/results), logs beside them.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WHEELS="${WHEELS:-$ROOT/.whl}"
# What the GPU image lacks (it has numpy, jax, torch, torchvision, h5py,
# ml-dtypes, rich, absl-py, packaging, matplotlib): keras and two of its
# requirements. Pin what you tested on the CPU machine.
PACKAGES="${PACKAGES:-keras==3.15.* namex optree}"

if [[ "${1:-}" == "--download" ]]; then
    mkdir -p "$WHEELS"
    # One call per package so that --no-deps fetches exactly this list;
    # the platform tags cover the manylinux flavours optree publishes.
    for pkg in $PACKAGES; do
        python3 -m pip download --no-deps --only-binary=:all: \
            --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 \
            --platform manylinux_2_27_x86_64 \
            --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 \
            --platform manylinux1_x86_64 \
            -d "$WHEELS" "$pkg" || exit 1
    done
    ls -l "$WHEELS"
    echo "Requirements of keras (check each is on the GPU image):"
    unzip -p "$WHEELS"/keras-*.whl '*/METADATA' | grep '^Requires-Dist' \
        | grep -v extra
    exit 0
fi

OUT="${1:-$ROOT/benchmarks/results}"
mkdir -p "$OUT"
cd "$ROOT" || exit 1

echo "== machine"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
else
    echo "no nvidia-smi: not a GPU machine (fine for TINY=1 checks)"
fi
python3 --version

if compgen -G "$WHEELS/*.whl" >/dev/null; then
    echo "== install wheels from $WHEELS (no index)"
    SITE=/tmp/frozenbn-site
    python3 -m pip install -q --no-index --no-deps --no-compile \
        --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl || exit 1
    export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
else
    echo "== no wheels in $WHEELS: using the installed keras"
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
# Keep JAX from reserving 75% of the card up front: torch runs after it.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
python3 -m pip show keras namex optree absl-py h5py ml-dtypes rich \
    packaging 2>/dev/null | grep -E '^(Name|Version)'
python3 - <<'PY' || exit 1
import importlib
for name in ("keras", "jax", "torch", "torchvision", "matplotlib"):
    try:
        mod = importlib.import_module(name)
    except ImportError:
        if name == "keras":
            raise
        print(name, "missing: its runs are skipped")
        continue
    print(name, getattr(mod, "__version__", "?"))
PY

status=0
# TINY=1 runs the same sequence at a tiny size: a check of the whole script
# on any machine (a CPU included) before spending GPU time.
if [[ "${TINY:-0}" == 1 ]]; then
    GAP_SIZE=--tiny
    SPEED_ARGS="${SPEED_ARGS:---tiny}"
else
    GAP_SIZE=--full
    # Five training arms (the fused step and the folded floor included) and
    # the step memory of the unfused and fused frozen models, one fresh
    # process each (speed_memory.py; device peak from the backend).
    SPEED_ARGS="${SPEED_ARGS:---image-size 224 --batch-size 64 --steps 10 --repeats 7 --warmup 2 --arms stock,keras_trainable_false,frozenbn,fused,folded --memory-arms frozenbn,fused}"
fi
BACKENDS="${BACKENDS:-jax torch}"
BENCHES="${BENCHES:-gap speed}"
for backend in $BACKENDS; do
    if [[ " $BENCHES " != *" gap "* ]]; then
        :
    elif [[ -f benchmarks/gap.py ]]; then
        echo "== $backend: gap.py $GAP_SIZE"
        KERAS_BACKEND=$backend python3 benchmarks/gap.py $GAP_SIZE --out "$OUT" \
            2>&1 | tee "$OUT/gap_${backend}_gpu.log" || status=1
    else
        echo "benchmarks/gap.py not found: skipped"
    fi
    [[ " $BENCHES " == *" speed "* ]] || continue
    echo "== $backend: speed.py $SPEED_ARGS"
    extra=""
    [[ $backend == torch ]] && extra="--torchvision-peer"
    # shellcheck disable=SC2086
    KERAS_BACKEND=$backend python3 benchmarks/speed.py $SPEED_ARGS $extra \
        --out "$OUT" 2>&1 | tee "$OUT/speed_${backend}_gpu.log" || status=1
done
ls -l "$OUT"
exit $status
