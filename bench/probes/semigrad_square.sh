#!/bin/bash
# Session 26 probe: the released checkerboard config's ESD as a whole: the semigradient
# (`--esd-stopgrad teacher`) with the off-diagonal (s, t) drawn on the whole square (`--off-times square`).
# From scratch at stage 1's recipe, 40,000 steps (controls: depth.sh's ESD depth-4 row, square.sh's
# esd-sq-40000), and from the shipped weights, 10,000 steps at lr 1.25e-4 (control: levers.sh's esd-control).
set -u
P=$OUT/sgsq
COMMON="--device cuda --max-seconds 520 --eval-every 520 --esd-stopgrad teacher --off-times square"
source "$(dirname "$0")/common.sh"
mkdir -p "$P"
probe_run esd-semi-sq-40000 esd 40000 --seed 0 --lr 1e-3 --anneal 0.5 &
probe_run esd-semi-sq-ft esd 10000 --seed 8 --init-from checkpoints --lr 1.25e-4 --anneal 0.5 &
wait
