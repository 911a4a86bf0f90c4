#!/bin/bash
# Session 23 probe 3: the three families above their paper row at some N, 30,000 more steps from the
# shipped 290,000-step weights (320,000 in all: 21 billion samples at batch 65,536, inside the paper's
# 15-25 billion), lr 1.25e-4 annealed over the second half, seed 8, EMA 0.999. Does the gap close
# with the paper's sample budget?
set -u
P=$OUT/longer
COMMON="--device cuda --max-seconds 540 --eval-every 540 --seed 8 --init-from checkpoints --lr 1.25e-4 --anneal 0.5"
source "$(dirname "$0")/common.sh"
mkdir -p "$P"
probe_run esd-30k esd 30000 &
probe_run psdm-30k psd-m 30000 &
probe_run psdu-30k psd-u 30000 &
wait
