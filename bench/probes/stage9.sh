#!/bin/bash
# The candidate ninth stage of the shipped checkerboard chain, for one training seed (first argument,
# e.g. 8 or 9): from the shipped 290,000-step weights, 20,000 more steps of every family at peak lr
# 1.25e-4 (cosine anneal over the second half), ESD and both PSDs drawing their off-diagonal pairs with
# `--off-times late` (session 29: below the paper at every N for ESD on seed 8, and PSD-M's N = 2 and
# PSD-U's N = 4 close to it), LSD and the flow-matching baseline on the triangle as before. One H200,
# about 410 s. Each checkerboard-<method> folder comes back as its own <method>-s<seed>.tgz, with its
# weights (about 3 MB each), and the scores as families-s<seed>.json / .md at the top of $OUT.
set -eu
SEED=${1:?training seed}
cd "$(dirname "$0")/../.."
P=/tmp/cb9-s$SEED  # outside $OUT: only the eight files named below come back
mkdir -p "$P"
python -m bench.families --device cuda --steps 20000 --lr 1.25e-4 --seed "$SEED" --max-seconds 470 --gpus 0 \
  --init-from checkpoints --off-times-for esd=late psd-m=late psd-u=late \
  --save "$P" --results "$P/res" --docs "$OUT/families-s$SEED.md" --log-dir "$P/logs" > "$OUT/train-s$SEED.log" 2>&1
cp "$P/logs/scores.json" "$OUT/families-s$SEED.json"
for d in "$P"/checkerboard-*; do
  tar czf "$OUT/$(basename "$d" | sed 's/^checkerboard-//')-s$SEED.tgz" -C "$P" "$(basename "$d")"
done
sed -n '/checkerboard KL/,$p' "$OUT/train-s$SEED.log" | head -12
