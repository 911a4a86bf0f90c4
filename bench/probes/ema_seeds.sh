#!/bin/bash
# Session 23 probe 2: is the longer weight average's gain for LSD (ema.sh) more than one training seed's
# luck? From the shipped 290,000-step weights, 10,000 steps (lr 1.25e-4 annealed over the second half),
# training seeds 9-11 for LSD and seed 9 for ESD, each with EMA 0.999 and 0.9999 (pairs share a seed).
set -u
P=$OUT/emaseeds
COMMON="--device cuda --max-seconds 560 --eval-every 560 --init-from checkpoints --lr 1.25e-4 --anneal 0.5"
source "$(dirname "$0")/common.sh"
mkdir -p "$P"
for seed in 9 10 11; do
  probe_run "lsd-s$seed-ema999" lsd 10000 --seed "$seed" &
  probe_run "lsd-s$seed-ema9999" lsd 10000 --seed "$seed" --ema 0.9999 &
done
probe_run esd-s9-ema999 esd 10000 --seed 9 &
probe_run esd-s9-ema9999 esd 10000 --seed 9 --ema 0.9999 &
wait
