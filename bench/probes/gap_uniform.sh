#!/bin/bash
# Session 22 probe 4: off-diagonal jump length uniform (kind "gap_uniform") instead of uniform on the
# triangle, from the shipped weights, 10,000 steps, seed 8, lr 1.25e-4 annealed: ESD and PSD-M. Their
# triangle controls are levers.sh's ESD control and session 21's PSD-M `mean` row (same settings).
set -u
cd "$(dirname "$0")/../.."
P=$OUT/gu
mkdir -p $P
common="--device cuda --steps 10000 --max-seconds 200 --target 0 --eval-every 200 --seed 8 --init-from checkpoints --lr 1.25e-4 --anneal 0.5 --off-times gap_uniform"
run() {  # name method
  local name=$1 method=$2
  mkdir -p $P/$name
  python -m bench.time_to_quality $common --methods $method --save $P/$name --results $P/$name/ttq --docs $P/$name/ttq.md > $P/$name/train.log 2>&1
  python -m bench.families --eval-only --methods $method --save $P/$name --steps 10000 --seed 8 --results $P/$name/res --docs $P/$name/doc.md --log-dir $P/$name/logs > $P/$name/eval.log 2>&1
  echo "$name done $(date +%T)"
  sed -n '/checkerboard KL/,$p' $P/$name/eval.log | sed -n 4p
  tar czf $OUT/$name.tgz --exclude='*.safetensors' -C $P $name
}
run esd-gapu esd &
run psdm-gapu psd-m &
wait
rm -rf $P
