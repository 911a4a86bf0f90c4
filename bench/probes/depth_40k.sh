#!/bin/bash
# Session 22 probe 2: network depth, from scratch, 40,000 steps, ESD only (stage 1's recipe: lr 1e-3 annealed, seed 0).
set -u
cd "$(dirname "$0")/../.."
P=$OUT/depth40k
mkdir -p $P
common="--device cuda --steps 40000 --max-seconds 490 --target 0 --eval-every 490 --seed 0 --lr 1e-3 --anneal 0.5"
run() {  # name method depth
  local name=$1 method=$2 depth=$3
  mkdir -p $P/$name
  python -m bench.time_to_quality $common --methods $method --depth $depth --save $P/$name --results $P/$name/ttq --docs $P/$name/ttq.md > $P/$name/train.log 2>&1
  python -m bench.families --eval-only --methods $method --depth $depth --save $P/$name --steps 40000 --seed 0 --results $P/$name/res --docs $P/$name/doc.md --log-dir $P/$name/logs > $P/$name/eval.log 2>&1
  echo "$name done $(date +%T)"
}
date +%T
run esd-d4 esd 4 &
run esd-d5 esd 5 &
wait
for d in $P/*/; do echo "== $d"; grep -E "^\| (esd|lsd) \| eager" $d/ttq.md | tail -1; sed -n '/checkerboard KL/,$p' $d/eval.log | sed -n 3,4p; done
tar czf $OUT/depth.tgz --exclude='*.safetensors' -C $OUT depth40k && rm -rf $P
