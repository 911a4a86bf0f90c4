#!/bin/bash
# Session 26 probe: the off-diagonal (s, t) drawn independently on [0, 1]^2 (forward and backward jumps,
# `--off-times square`, the authors' released checkerboard code) against the triangle s < t. From scratch,
# stage 1's recipe (lr 1e-3 annealed over the second half, seed 0), as depth.sh: its depth-4 rows (ESD at
# 40,000 steps, LSD at 14,000) are the controls; PSD-M gets its control here.
set -u
P=$OUT/sq
COMMON="--device cuda --max-seconds 490 --eval-every 490 --seed 0 --lr 1e-3 --anneal 0.5"
source "$(dirname "$0")/common.sh"
mkdir -p "$P"
probe_run esd-sq-40000 esd 40000 --off-times square &
probe_run lsd-sq-14000 lsd 14000 --off-times square &
probe_run psdm-sq-14000 psd-m 14000 --off-times square &
probe_run psdm-tri-14000 psd-m 14000 &
wait
