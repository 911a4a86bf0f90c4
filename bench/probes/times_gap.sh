#!/bin/bash
# Session 22 probe 3: the net's time inputs [s, t - s] instead of [s, t], from scratch, stage 1's recipe
# (lr 1e-3 annealed over the second half, seed 0): ESD 40,000 steps, LSD 14,000 steps; their [s, t]
# controls are depth_40k.sh's and depth_14k.sh's depth-4 runs.
set -u
cd "$(dirname "$0")/../.."
P=$OUT/gap
mkdir -p $P
common="--device cuda --target 0 --eval-every 470 --max-seconds 470 --seed 0 --lr 1e-3 --anneal 0.5 --times s_gap"
run() {  # name method steps
  local name=$1 method=$2 steps=$3
  mkdir -p $P/$name
  python -m bench.time_to_quality $common --methods $method --steps $steps --save $P/$name --results $P/$name/ttq --docs $P/$name/ttq.md > $P/$name/train.log 2>&1
  python -m bench.families --eval-only --methods $method --save $P/$name --steps $steps --seed 0 --results $P/$name/res --docs $P/$name/doc.md --log-dir $P/$name/logs > $P/$name/eval.log 2>&1
  echo "$name done $(date +%T)"
  sed -n '/checkerboard KL/,$p' $P/$name/eval.log | sed -n 4p
  tar czf $OUT/$name.tgz --exclude='*.safetensors' -C $P $name
}
date +%T
run esd-gap-40k esd 40000 &
run lsd-gap-14k lsd 14000 &
wait
