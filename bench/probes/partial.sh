#!/bin/bash
# Session 26 probe: ESD with a share lam of the transport term's gradient (`--esd-transport-grad`,
# bench/esd_transport.py; 1 = the esd preset, 0 = the semigradient). From the shipped weights, 10,000
# steps, seed 8, lr 1.25e-4 annealed (control: levers.sh's esd-control), at lam 0.5 and 0.8; and from
# scratch at stage 1's recipe, 14,000 steps at lam 0.5 (control: depth.sh's ESD depth-4 row).
set -u
P=$OUT/pt
COMMON="--device cuda --max-seconds 330 --eval-every 330"
source "$(dirname "$0")/common.sh"
mkdir -p "$P"
probe_run esd-lam05-ft esd 10000 --seed 8 --init-from checkpoints --lr 1.25e-4 --anneal 0.5 --esd-transport-grad 0.5 &
probe_run esd-lam08-ft esd 10000 --seed 8 --init-from checkpoints --lr 1.25e-4 --anneal 0.5 --esd-transport-grad 0.8 &
probe_run esd-lam05-14000 esd 14000 --seed 0 --lr 1e-3 --anneal 0.5 --esd-transport-grad 0.5 &
wait
