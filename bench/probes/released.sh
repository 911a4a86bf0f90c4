#!/bin/bash
# Session 27 probe, third call: the authors' released checkerboard recipe for ESD with every difference
# from ours at once, each of which was tried alone before (sessions 22-27): a five-layer net (`--depth 5`)
# from Flax's start (`--init lecun`), batch 100,000, lr 1e-3 constant for 35,000 steps then
# lr0 / sqrt(k / 35k) (no anneal), (s, t) independent on [0, 1]^2 (`--off-times square`), the mean over
# all samples, EMA 0.999, and the config's ESD placement, the semigradient (`--esd-stopgrad teacher`,
# the transport term under stop-gradient with the current weights as teacher, as the released loss
# arguments set it). Beside it, the same recipe with the esd preset's full gradient. Cut by time.
set -u
P=$OUT/rel
COMMON="--device cuda --max-seconds 420 --eval-every 420 --seed 0 --lr 1e-3 --depth 5 --init lecun --batch 100000 --off-times square"
source "$(dirname "$0")/common.sh"
mkdir -p "$P"
probe_run esd-released-semigrad esd 100000 --esd-stopgrad teacher &
probe_run esd-released-fullgrad esd 100000 &
wait
