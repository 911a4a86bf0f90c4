#!/bin/bash
# Session 23 probe: a longer weight average. From the shipped 290,000-step weights, 10,000 steps per
# variant (seed 8, lr 1.25e-4 annealed over the second half) with EMA decay 0.9999 in place of 0.999.
# The EMA's warm-up min(decay, (1 + k) / (10 + k)) stays below 0.9999 for the first 90,000 steps of a
# run, so within one stage 0.9999 is close to a plain average of the stage's iterates; the controls
# (EMA 0.999, the same seed and steps) are session 21's and 22's runs, which reproduce to every digit.
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
