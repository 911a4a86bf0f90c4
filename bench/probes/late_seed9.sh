#!/bin/bash
# Session 29: bench/probes/late.sh on a second training seed (9), to tell the late sampler's gain from
# the spread between equally trained weights. ESD 10,000 steps (its triangle control on seed 9 is in
# bench/results/families_ema_probe.json: 0.1035 / 0.0999 at N = 1 / 2) and 20,000; PSD-M and PSD-U
# 20,000, the candidate ninth stage's length. Capped at 230 s each to fit the session's device time.
set -u
P=$OUT/late9
COMMON="--device cuda --max-seconds 230 --eval-every 230 --seed 9 --init-from checkpoints --lr 1.25e-4 --anneal 0.5 --off-times late"
source "$(dirname "$0")/common.sh"
mkdir -p "$P"
probe_run esd-late-s9 esd 10000 &
probe_run esd-late-20k-s9 esd 20000 &
probe_run psdm-late-20k-s9 psd-m 20000 &
probe_run psdu-late-20k-s9 psd-u 20000 &
wait
