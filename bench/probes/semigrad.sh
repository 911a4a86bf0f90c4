#!/bin/bash
# Session 26 probe: ESD with the semigradient (the transport term grad X . v under stop-gradient,
# `--esd-stopgrad teacher`), the placement of the authors' released checkerboard config, against the esd
# preset's full gradient. From the shipped 290,000-step weights, 10,000 steps, seed 8, lr 1.25e-4 and 5e-4
# annealed over the second half (control: levers.sh's esd-control); and from scratch at stage 1's recipe,
# 14,000 steps (control: depth.sh's ESD depth-4 row).
set -u
P=$OUT/sg
COMMON="--device cuda --max-seconds 470 --eval-every 470 --esd-stopgrad teacher"
source "$(dirname "$0")/common.sh"
mkdir -p "$P"
probe_run esd-semi-ft esd 10000 --seed 8 --init-from checkpoints --lr 1.25e-4 --anneal 0.5 &
probe_run esd-semi-ft-lr5 esd 10000 --seed 8 --init-from checkpoints --lr 5e-4 --anneal 0.5 &
probe_run esd-semi-14000 esd 14000 --seed 0 --lr 1e-3 --anneal 0.5 &
wait
