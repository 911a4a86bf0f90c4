#!/bin/bash
# Session 28 probe: the batch split that the authors' released loss gives on several devices. Their
# loss splits each device's shard by the same diagonal fraction as the global batch, after the
# diagonal samples were put first in the global batch. On 4 devices at diag_fraction 0.75, shards
# 0-2 hold only diagonal times: their last quarter goes through the off-diagonal term at s = t, whose
# residual (and gradient) is zero for LSD, ESD and PSD. Only shard 3's last quarter is a real jump:
# 6.25% of the batch, against 75% flow matching, all divided by the whole batch. The loss is then the
# mean over the non-zero samples with a 12:1 weight, i.e. `--eta 12/13 --reduction mean`, which this
# probe runs from the shipped 290,000-step weights (10,000 steps, seed 8, lr 1.25e-4 annealed over the
# second half, as the session-22 controls in bench/results/families_levers_probe.json).
set -u
P=$OUT/split
COMMON="--device cuda --max-seconds 520 --eval-every 520 --seed 8 --init-from checkpoints --lr 1.25e-4 --anneal 0.5"
source "$(dirname "$0")/common.sh"
mkdir -p "$P"
ETA=0.923077
probe_run esd-split esd 10000 --eta $ETA &
probe_run esd-split-20k esd 20000 --eta $ETA &
probe_run esd-split-square esd 10000 --eta $ETA --off-times square &
probe_run psdm-split psd-m 10000 --eta $ETA &
probe_run psdu-split psd-u 10000 --eta $ETA &
probe_run lsd-split lsd 10000 --eta $ETA &
wait
