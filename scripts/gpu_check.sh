#!/usr/bin/env bash
# GPU check, on a machine with an NVIDIA GPU, everything into one log:
#   1. the GPU tests (`pytest -m gpu`);
#   2. bf16 training throughput of the I3D detector at 320x320, batch 8, the paper's data
#      settings (benchmarks/train.py --i3d-only): iterations/s and peak GPU memory;
#   3. the data loader benchmark (benchmarks/loader.py) with 1 and 8 workers;
#   4. distributed evaluation of the checkpoint step 2 wrote: torchrun over every GPU
#      (with one GPU: 2 gloo processes on the CPU, on a few pairs) against one process,
#      detections compared byte for byte.
# Each step runs even when one before failed; the last line says which failed.
# Without a GPU that torch can use it says so in one line and exits 1, running nothing.
#
#   bash scripts/gpu_check.sh [WORK]     # default runs/gpu_check; the log is WORK/gpu_check.log
set -uo pipefail
WORK=${1:-runs/gpu_check}
BIN=${BIN:-.venv/bin}
CHECK_PAIRS=${CHECK_PAIRS:-4}   # pairs of the CPU comparison with one GPU (I3D on the CPU is slow)

if ! "$BIN/python" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA GPU usable by torch on this machine (or $BIN/python missing): nothing run"
    exit 1
fi
mkdir -p "$WORK"
LOG="$WORK/gpu_check.log"
exec > >(tee "$LOG") 2>&1
FAILED=()

step() {  # step NAME COMMAND...: run it, time it, remember a failure
    local name=$1 began=$SECONDS
    shift
    echo
    echo "== $name: $*"
    if "$@"; then
        echo "== $name: ok ($((SECONDS - began)) s)"
    else
        echo "== $name: FAILED, exit $? ($((SECONDS - began)) s)"
        FAILED+=("$name")
    fi
}

evaluate() {  # evaluate OUT EXTRA...: stvr-model evaluate of the step-2 checkpoint on the test split
    local out=$1
    shift
    "$BIN/stvr-model" evaluate --checkpoint "$WORK/train/runs/i3d/last.pt" --manifest "$WORK/train/bench320" \
        --split test --pictures 0 --out "$out" "$@"
}

torchrun_evaluate() {  # torchrun_evaluate PROCESSES OUT EXTRA...
    local processes=$1 out=$2
    shift 2
    "$BIN/python" -m torch.distributed.run --standalone --nproc_per_node "$processes" --no-python \
        "$BIN/stvr-model" evaluate --checkpoint "$WORK/train/runs/i3d/last.pt" \
        --manifest "$WORK/train/bench320" --split test --pictures 0 --out "$out" "$@"
}

distributed_evaluation() {
    local gpus
    gpus=$(nvidia-smi -L | wc -l)
    if [ "$gpus" -ge 2 ]; then
        time evaluate "$WORK/eval-one" --device cuda --workers 4 || return 1
        time torchrun_evaluate "$gpus" "$WORK/eval-torchrun" --device cuda --workers 4 || return 1
    else
        echo "one GPU: evaluation on it, then the comparison with 2 gloo processes on the CPU ($CHECK_PAIRS pairs)"
        time evaluate "$WORK/eval-gpu" --device cuda --workers 4 || return 1
        OMP_NUM_THREADS=4 evaluate "$WORK/eval-one" --device cpu --workers 2 --max-pairs "$CHECK_PAIRS" || return 1
        OMP_NUM_THREADS=4 torchrun_evaluate 2 "$WORK/eval-torchrun" --device cpu --workers 2 \
            --max-pairs "$CHECK_PAIRS" || return 1
    fi
    cmp "$WORK/eval-one/detections_test.parquet" "$WORK/eval-torchrun/detections_test.parquet" \
        && echo "torchrun detections: byte-identical to one process"
}

echo "gpu_check $(date -u '+%Y-%m-%d %H:%M:%S UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
nvidia-smi
step "GPU tests" "$BIN/python" -m pytest -m gpu -q
step "I3D bf16 training throughput" "$BIN/python" benchmarks/train.py --i3d-only --device cuda --i3d-batch 8 \
    --i3d-iterations 20 --i3d-workers 8 --data paper --workdir "$WORK/train"
step "loader, 1 worker" "$BIN/python" benchmarks/loader.py --workers 1 --workdir "$WORK/train"
step "loader, 8 workers" "$BIN/python" benchmarks/loader.py --workers 8 --train-samples 240 \
    --eval-samples 40 --workdir "$WORK/train"
step "distributed evaluation" distributed_evaluation
echo
if [ ${#FAILED[@]} -eq 0 ]; then
    echo "gpu_check: every step passed; log in $LOG"
else
    echo "gpu_check: FAILED: ${FAILED[*]}; log in $LOG"
    exit 1
fi
