#!/bin/bash
# The candidate tenth stage of the checkerboard chain, for one chain of weights: 20,000 more steps of
# every family from the ninth stage's weights in INIT (second argument: `checkpoints` for the shipped
# seed-9 chain, or a folder of the seed-8 chain's checkerboard-<method> folders), training seed SEED
# (first argument), for the families named after it (default: all five). Peak lr 6.25e-5 (half the
# ninth stage's) for ESD, PSD-M, PSD-U and FM, 1.5625e-5 (half of its ninth stage's) for LSD, each cosine-annealed over the second half; ESD and both PSDs
# keep the late off-diagonal sampler of their ninth stage, LSD and FM the triangle. One H200, the
# five side by side (the ninth stage took 409 s). Back in $OUT: stage10-s<seed>.tgz (the five
# checkerboard-<method> folders with their weights, about 15 MB) and the scores as
# families-s<seed>.json / .md with the run's log.
set -eu
SEED=${1:?training seed}
INIT=${2:?folder of checkerboard-<method> folders to continue from}
shift 2
METHODS=${*:-lsd esd psd-m psd-u fm}
cd "$(dirname "$0")/../.."
P=/tmp/cb10-s$SEED  # outside $OUT: only the four files named below come back
mkdir -p "$P"
python -m bench.families --device cuda --methods $METHODS --steps 20000 --lr 6.25e-5 --lr-for lsd=1.5625e-5 \
  --seed "$SEED" --max-seconds 520 --gpus 0 --init-from "$INIT" --off-times-for esd=late psd-m=late psd-u=late \
  --save "$P" --results "$P/res" --docs "$OUT/families-s$SEED.md" --log-dir "$P/logs" > "$OUT/train-s$SEED.log" 2>&1
cp "$P/logs/scores.json" "$OUT/families-s$SEED.json"
tar czf "$OUT/stage10-s$SEED.tgz" -C "$P" $(cd "$P" && ls -d checkerboard-*)
sed -n '/checkerboard KL/,$p' "$OUT/train-s$SEED.log" | head -14
