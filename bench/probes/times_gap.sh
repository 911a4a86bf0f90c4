#!/bin/bash
# Session 22 probe 3: the net fed [s, t - s] instead of [s, t] (MLP times="s_gap"), from scratch, stage 1's
# recipe (lr 1e-3 annealed, seed 0): ESD 40,000 steps, LSD 14,000; controls: depth.sh's depth-4 runs.
set -u
P=$OUT/gap
COMMON="--device cuda --max-seconds 470 --eval-every 470 --seed 0 --lr 1e-3 --anneal 0.5 --times s_gap"
source "$(dirname "$0")/common.sh"
mkdir -p "$P"
probe_run esd-gap-40k esd 40000 &
probe_run lsd-gap-14k lsd 14000 &
wait
