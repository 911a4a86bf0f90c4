#!/bin/bash
# Probe: LSD's ninth stage at a lower peak learning rate. At 1.25e-4 (bench/probes/stage9.sh) LSD
# lost its N = 1 empty bin but came back worse at N >= 2 than the shipped 290,000-step weights
# (seed 8: 0.0734 / 0.0707 at N = 2 / 4, shipped 0.0705 / 0.0691). Same 20,000 steps from the same
# weights, peak lr 6.25e-5 and 3.125e-5, training seeds 8 and 9, four runs side by side on one H200.
# Scores come back as lsd-lr<lr>-s<seed>.json / .md, the weights as lsd-lr<lr>-s<seed>.tgz.
set -eu
cd "$(dirname "$0")/../.."
for LR in 6.25e-5 3.125e-5; do
  for SEED in 8 9; do
    P=/tmp/cb9lsd-$LR-s$SEED
    mkdir -p "$P"
    python -m bench.families --device cuda --methods lsd --steps 20000 --lr "$LR" --seed "$SEED" \
      --max-seconds 520 --gpus 0 --init-from checkpoints --save "$P" --results "$P/res" \
      --docs "$OUT/lsd-lr$LR-s$SEED.md" --log-dir "$P/logs" > "$P/train.log" 2>&1 &
  done
done
wait
for LR in 6.25e-5 3.125e-5; do
  for SEED in 8 9; do
    P=/tmp/cb9lsd-$LR-s$SEED
    cp "$P/logs/scores.json" "$OUT/lsd-lr$LR-s$SEED.json"
    tar czf "$OUT/lsd-lr$LR-s$SEED.tgz" -C "$P" checkerboard-lsd
    echo "== lr $LR seed $SEED"; grep '^| lsd' "$P/train.log" || tail -5 "$P/train.log"
  done
done
