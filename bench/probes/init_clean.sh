#!/bin/bash
# Session 27 probe, second call: init.sh ran four variants side by side and its ESD runs hit the time cap
# before 40,000 steps (38,950 at depth 4), so their learning rate had not finished its anneal. Here ESD
# with `--init lecun` runs its 40,000 steps whole, beside a second training seed of the default init
# (seed 1), which measures how far two from-scratch runs differ when only the seed changes.
set -u
P=$OUT/init2
COMMON="--device cuda --max-seconds 520 --eval-every 520 --lr 1e-3 --anneal 0.5"
source "$(dirname "$0")/common.sh"
mkdir -p "$P"
probe_run esd-lecun-40000-full esd 40000 --seed 0 --init lecun &
probe_run esd-seed1-40000 esd 40000 --seed 1 &
wait
