#!/bin/bash
# Session 23 probe: a longer weight average. From the shipped 290,000-step weights, 10,000 steps per
# variant (seed 8, lr 1.25e-4 annealed over the second half) with EMA decay 0.9999 in place of 0.999.
# The EMA's warm-up min(decay, (1 + k) / (10 + k)) reaches 0.999 at step 8,991 of a run, so the two
# decays differ only in the stage's last 1,000 steps: 0.999 keeps about the last 1,000 iterates, 0.9999
# keeps averaging the whole stage. The controls (EMA 0.999, the same seed and steps) are session 21's
# and 22's runs, which reproduce to every printed digit.
# Two ESD runs of 20,000 steps (EMA 0.9999 and 0.999) separate the average from the extra steps.
set -u
P=$OUT/ema
COMMON="--device cuda --max-seconds 520 --eval-every 520 --seed 8 --init-from checkpoints --lr 1.25e-4 --anneal 0.5"
source "$(dirname "$0")/common.sh"
mkdir -p "$P"
probe_run esd-ema9999 esd 10000 --ema 0.9999 &
probe_run psdm-ema9999 psd-m 10000 --ema 0.9999 &
probe_run psdu-ema9999 psd-u 10000 --ema 0.9999 &
probe_run lsd-ema9999 lsd 10000 --ema 0.9999 &
probe_run psdm-som-ema9999 psd-m 10000 --ema 0.9999 --reduction sum_of_means &
probe_run esd-ema9999-20k esd 20000 --ema 0.9999 &
probe_run esd-control-20k esd 20000 &
wait
