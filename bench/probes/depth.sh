#!/bin/bash
# Session 22 probe 2: depth 4 against depth 5 (width 512) from scratch, stage 1's recipe (lr 1e-3 annealed
# over the second half, seed 0). Run as `depth.sh 14000 esd lsd` and `depth.sh 40000 esd`.
set -u
steps=$1
shift
P=$OUT/depth
COMMON="--device cuda --max-seconds 490 --eval-every 490 --seed 0 --lr 1e-3 --anneal 0.5"
source "$(dirname "$0")/common.sh"
mkdir -p "$P"
for method in "$@"; do
  probe_run "$method-d4-$steps" "$method" "$steps" --depth 4 &
  probe_run "$method-d5-$steps" "$method" "$steps" --depth 5 &
done
wait
