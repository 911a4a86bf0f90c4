#!/bin/bash
# Session 22 probe: from the shipped 290,000-step weights, 10,000 steps per variant, all at once on one H200.
set -u
cd "$(dirname "$0")/../.."
nvidia-smi --query-gpu=name,memory.used --format=csv
P=$OUT/probe
mkdir -p $P
common="--device cuda --steps 10000 --max-seconds 470 --target 0 --eval-every 470 --seed 8 --init-from checkpoints"
run() {  # name method extra...
  local name=$1 method=$2; shift 2
  mkdir -p $P/$name
  python -m bench.time_to_quality $common --methods $method --save $P/$name --results $P/$name/ttq --docs $P/$name/ttq.md "$@" > $P/$name/train.log 2>&1
  python -m bench.families --eval-only --methods $method --save $P/$name --steps 10000 --seed 8 --results $P/$name/res --docs $P/$name/doc.md --log-dir $P/$name/logs > $P/$name/eval.log 2>&1
  echo "$name done $(date +%T)"
}
date +%T
run esd-control esd --lr 1.25e-4 --anneal 0.5 &
run esd-batch100k esd --lr 1.25e-4 --anneal 0.5 --batch 100000 &
run esd-paperlr esd --lr 1e-3 --anneal 1.0 &
run psdu-mean psd-u --lr 1.25e-4 --anneal 0.5 &
run psdu-som psd-u --lr 1.25e-4 --anneal 0.5 --reduction sum_of_means &
run lsd-mean lsd --lr 1.25e-4 --anneal 0.5 &
run lsd-som lsd --lr 1.25e-4 --anneal 0.5 --reduction sum_of_means &
wait
for d in $P/*/; do echo "== $d"; grep -E "steps|it/s|steps/s" $d/train.log | tail -2; sed -n '/checkerboard KL/,$p' $d/eval.log | head -12; done

tar czf $OUT/probe.tgz --exclude="*.safetensors" -C $OUT probe && rm -rf $P
