#!/bin/bash
# Probe: do two GPU runs from the same weights, training seed and settings end with the same weights?
# LSD's ninth-stage runs did not repeat to the digit (seed 8 at 1.25e-4: N = 1 0.0831 in one session,
# 0.0849 in another) where ESD's, PSD's and FM's did. 2,000 steps of LSD and of ESD from the shipped
# weights, each run twice, the four side by side on one GPU (about a minute on an H200); prints the
# largest absolute difference of each parameter tensor between the two runs of a method.
set -eu
cd "$(dirname "$0")/../.."
for M in lsd esd; do
  for R in a b; do
    P=/tmp/repeat-$M-$R
    mkdir -p "$P"
    python -m bench.time_to_quality --device cuda --methods "$M" --steps 2000 --max-seconds 300 --target 0 \
      --anneal 0.5 --lr 1.25e-4 --seed 8 --init-from checkpoints --eval-every 300 --n-eval 4000 \
      --save "$P" --results "$P/res" --docs "$P/run.md" > "$P/log" 2>&1 &
  done
done
wait
python - <<'PY'
from safetensors.torch import load_file

for m in ("lsd", "esd"):
    a = load_file(f"/tmp/repeat-{m}-a/checkerboard-{m}/model.safetensors")
    b = load_file(f"/tmp/repeat-{m}-b/checkerboard-{m}/model.safetensors")
    diff = {k: (a[k].double() - b[k].double()).abs().max().item() for k in a}
    worst = max(diff.values())
    print(f"{m}: {sum(v > 0 for v in diff.values())} of {len(diff)} tensors differ; largest difference {worst:.3e}")
PY
