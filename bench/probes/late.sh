#!/bin/bash
# Session 29 probe: more off-diagonal pairs late in time (`--off-times late`: the triangle's (s, t)
# through u -> 1 - (1 - u)^2, about 71% of the times above 1/2). bench/own_ode.py found every shipped
# checkerboard map least accurate against its own ODE late in time ([0.75, 1] holds about half of the
# one-jump error of ESD and PSD), while every family's velocity is as good as flow matching's. From
# the shipped 290,000-step weights, seed 8, lr 1.25e-4 annealed over the second half, as the session
# 21-23 controls (bench/results/families_levers_probe.json, families_ema_probe.json), which used the
# triangle: ESD 10,000 and 20,000 steps, PSD-M, PSD-U and LSD 10,000.
set -u
P=$OUT/late
COMMON="--device cuda --max-seconds 520 --eval-every 520 --seed 8 --init-from checkpoints --lr 1.25e-4 --anneal 0.5 --off-times late"
source "$(dirname "$0")/common.sh"
mkdir -p "$P"
probe_run esd-late esd 10000 &
probe_run esd-late-20k esd 20000 &
probe_run psdm-late psd-m 10000 &
probe_run psdu-late psd-u 10000 &
probe_run lsd-late lsd 10000 &
wait
