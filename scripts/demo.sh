#!/usr/bin/env bash
# End-to-end demo on the embedded synthetic sample, on the CPU in a few minutes:
# make the sample (AVA layout, real video files), build the benchmark, train the warp LSTM
# briefly with the small backbone, evaluate on the test split, print the score, draw pictures.
# The training is far too short to learn the task: the demo shows the whole pipeline
# working, not a result (benchmarks/README.md has the longer Table-1 experiment).
set -euo pipefail
OUT=${1:-runs/demo}
BIN=${BIN:-.venv/bin}
CELL=${CELL:-warp}
ITERATIONS=${ITERATIONS:-60}

echo "== 1/4 synthetic AVA-layout sample -> $OUT/sample"
"$BIN/stvr-data" make-sample --out "$OUT/sample" --seed 0 --force

echo "== 2/4 benchmark -> $OUT/benchmark"
"$BIN/stvr-data" build-ava --annotations "$OUT/sample/annotations" --videos "$OUT/sample/videos" \
    --out "$OUT/benchmark" --min-tubelets 3 --num-val-labels 2 --num-test-labels 2 \
    --resolution 128x128 --workers 2

echo "== 3/4 train the $CELL cell ($ITERATIONS iterations, small backbone, CPU) -> $OUT/train-$CELL"
rm -rf "$OUT/train-$CELL"
"$BIN/stvr-model" train --manifest "$OUT/benchmark" --cell "$CELL" --backbone small \
    --out "$OUT/train-$CELL" --iterations "$ITERATIONS" --batch-size 2 --lr 0.01 \
    --milestones "$((ITERATIONS * 2 / 3))" --query-clips-per-second 1 --max-query-seconds 2 \
    --box-head-blocks 0 --anchor-sizes 32,64,128,256 --checkpoint-every 20 --workers 1 --device cpu

echo "== 4/4 evaluate on the test split"
"$BIN/stvr-model" evaluate --checkpoint "$OUT/train-$CELL/last.pt" --manifest "$OUT/benchmark" \
    --split test --out "$OUT/eval-$CELL" --device cpu --pictures 4

echo
echo "pictures: $OUT/benchmark/samples_per_label.png, $OUT/train-$CELL/loss.png, $OUT/eval-$CELL/pictures/"
