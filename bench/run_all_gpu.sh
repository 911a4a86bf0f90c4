#!/usr/bin/env bash
# The GPU benchmarks in one go (about 8 minutes on one H100):
#   1. train-step cost of every objective (MLP 512x4 at batch 65,536 and the UNet), peak memory;
#   2. sampling cost of the Fashion-MNIST checkpoints (skipped if there are none);
#   3. time to quality on the checkerboard (LSD by default), saving the EMA model.
# Outputs: bench/results/*.json, docs/benchmarks.md, checkpoints/checkerboard-<method>/;
# all are copied to "$OUT" when that variable is set.
# Knobs (environment): TTQ_METHODS (default "lsd"), TTQ_SECONDS (training-time cap per method,
# default 300), TTQ_SAVE (default checkpoints), STEP_COST_COMPILE=1 (also time torch.compile),
# FID_SAMPLES (default 0: no FID in the sampling table).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
TTQ_METHODS="${TTQ_METHODS:-lsd}"
TTQ_SECONDS="${TTQ_SECONDS:-300}"
TTQ_SAVE="${TTQ_SAVE:-checkpoints}"
STATUS=0

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

COMPILE=()
if [ "${STEP_COST_COMPILE:-0}" = "1" ]; then COMPILE=(--compile); fi
timeout 240 python -m bench.step_cost --device cuda "${COMPILE[@]}" || { echo "step_cost failed ($?)"; STATUS=1; }
timeout 90 python -m bench.sampling --device cuda --fid-samples "${FID_SAMPLES:-0}" || { echo "sampling failed ($?)"; STATUS=1; }
# shellcheck disable=SC2086
timeout $((TTQ_SECONDS * $(echo $TTQ_METHODS | wc -w) + 120)) python -m bench.time_to_quality --device cuda \
    --methods $TTQ_METHODS --max-seconds "$TTQ_SECONDS" --save "$TTQ_SAVE" || { echo "time_to_quality failed ($?)"; STATUS=1; }

if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT/bench/results" "$OUT/docs" "$OUT/checkpoints"
    cp -r bench/results/. "$OUT/bench/results/" 2>/dev/null || true
    cp docs/benchmarks.md "$OUT/docs/" 2>/dev/null || true
    for m in $TTQ_METHODS; do
        [ -d "$TTQ_SAVE/checkerboard-$m" ] && cp -r "$TTQ_SAVE/checkerboard-$m" "$OUT/checkpoints/"
    done
    echo "copied outputs to $OUT"
fi
exit $STATUS
