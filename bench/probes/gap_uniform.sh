#!/bin/bash
# Session 22 probe 4: off-diagonal jump length uniform (kind "gap_uniform") instead of uniform on the
# triangle, from the shipped weights, 10,000 steps, seed 8, lr 1.25e-4 annealed: ESD and PSD-M. Controls:
# levers.sh's ESD control and session 21's PSD-M `mean` row (same settings).
set -u
P=$OUT/gu
COMMON="--device cuda --max-seconds 200 --eval-every 200 --seed 8 --init-from checkpoints --lr 1.25e-4 --anneal 0.5 --off-times gap_uniform"
source "$(dirname "$0")/common.sh"
mkdir -p "$P"
probe_run esd-gapu esd 10000 &
probe_run psdm-gapu psd-m 10000 &
wait
