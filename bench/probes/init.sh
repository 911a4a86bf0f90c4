#!/bin/bash
# Session 27 probe: the net's starting weights. The authors' released checkerboard net is a Flax MLP whose
# Dense layers start from Flax's default (truncated-normal weights of variance 1 / fan_in, zero biases,
# `--init lecun`); ours start from PyTorch's default (uniform, variance 1 / (3 fan_in), random biases).
# From scratch at stage 1's recipe (lr 1e-3 annealed over the second half, seed 0), as depth.sh and
# square.sh, whose rows are the controls: ESD at 40,000 steps (depth 4 and 5), LSD and PSD-M at 14,000.
set -u
P=$OUT/init
COMMON="--device cuda --max-seconds 490 --eval-every 490 --seed 0 --lr 1e-3 --anneal 0.5 --init lecun"
source "$(dirname "$0")/common.sh"
mkdir -p "$P"
probe_run esd-lecun-40000 esd 40000 &
probe_run esd-lecun-d5-40000 esd 40000 --depth 5 &
probe_run lsd-lecun-14000 lsd 14000 &
probe_run psdm-lecun-14000 psd-m 14000 &
wait
