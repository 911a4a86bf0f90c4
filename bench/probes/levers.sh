#!/bin/bash
# Session 22 probe 1: from the shipped 290,000-step weights, 10,000 steps per variant (seed 8, lr 1.25e-4
# annealed over the second half unless named), seven variants at once on one H200.
set -u
P=$OUT/probe
COMMON="--device cuda --max-seconds 470 --eval-every 470 --seed 8 --init-from checkpoints"
source "$(dirname "$0")/common.sh"
mkdir -p "$P"
probe_run esd-control esd 10000 --lr 1.25e-4 --anneal 0.5 &
probe_run esd-batch100k esd 10000 --lr 1.25e-4 --anneal 0.5 --batch 100000 &
probe_run esd-paperlr esd 10000 --lr 1e-3 --anneal 1.0 &
probe_run psdu-mean psd-u 10000 --lr 1.25e-4 --anneal 0.5 &
probe_run psdu-som psd-u 10000 --lr 1.25e-4 --anneal 0.5 --reduction sum_of_means &
probe_run lsd-mean lsd 10000 --lr 1.25e-4 --anneal 0.5 &
probe_run lsd-som lsd 10000 --lr 1.25e-4 --anneal 0.5 --reduction sum_of_means &
wait
