#!/bin/bash
# The eleventh stage of the checkerboard chain (bench/probes/stage.sh) for one chain of weights: peak
# lr 3.125e-5 (half the tenth stage's) for ESD, PSD-M, PSD-U and FM, 7.8125e-6 for LSD (half of its
# tenth stage's). Usage: bash bench/probes/stage11.sh SEED INIT [METHODS...] (INIT: `checkpoints` for
# the shipped seed-8 chain's tenth stage, or a folder of the other chain's).
set -eu
SEED=${1:?training seed}
INIT=${2:?folder of checkerboard-<method> folders to continue from}
shift 2
exec bash "$(dirname "$0")/stage.sh" stage11 "$SEED" "$INIT" 3.125e-5 7.8125e-6 "$@"
