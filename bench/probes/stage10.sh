#!/bin/bash
# The tenth stage of the checkerboard chain (bench/probes/stage.sh) for one chain of weights: peak lr
# 6.25e-5 (half the ninth stage's) for ESD, PSD-M, PSD-U and FM, 1.5625e-5 (half of its ninth stage's)
# for LSD. Usage: bash bench/probes/stage10.sh SEED INIT [METHODS...] (INIT: `checkpoints` for the
# seed-9 chain's ninth stage as shipped then, or a folder of the seed-8 chain's). Ran before runs
# annealed by step count alone (bench.time_to_quality.budget_fraction); its max-seconds was 520.
set -eu
SEED=${1:?training seed}
INIT=${2:?folder of checkerboard-<method> folders to continue from}
shift 2
exec bash "$(dirname "$0")/stage.sh" stage10 "$SEED" "$INIT" 6.25e-5 1.5625e-5 "$@"
