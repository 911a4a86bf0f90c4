#!/bin/bash
# One more stage of the checkerboard chain for one chain of weights: 20,000 steps of every family
# named (default all five) from the EMA weights in INIT (`checkpoints` for the shipped chain, or a
# folder of checkerboard-<method> folders), training seed SEED, peak lr LR for ESD, PSD-M, PSD-U and
# FM and LSD_LR for LSD, each cosine-annealed over the stage's second half by its step count; ESD and
# both PSDs on the late off-diagonal sampler, LSD and FM on the paper's triangle. One H200, the
# families side by side (five took 409 s in the tenth stage). Usage:
#   bash bench/probes/stage.sh TAG SEED INIT LR LSD_LR [METHODS...]
# Back in $OUT: TAG-s<seed>.tgz (the checkerboard-<method> folders, about 3.2 MB each) and the
# scores as families-s<seed>.json / .md with the run's log train-s<seed>.log.
set -eu
TAG=${1:?stage tag, e.g. stage11}
SEED=${2:?training seed}
INIT=${3:?folder of checkerboard-<method> folders to continue from}
LR=${4:?peak lr of ESD, PSD-M, PSD-U and FM}
LSD_LR=${5:?peak lr of LSD}
shift 5
METHODS=${*:-lsd esd psd-m psd-u fm}
cd "$(dirname "$0")/../.."
P=/tmp/cb-$TAG-s$SEED  # outside $OUT: only the four files named above come back
mkdir -p "$P"
python -m bench.families --device cuda --methods $METHODS --steps 20000 --lr "$LR" --lr-for lsd="$LSD_LR" \
  --seed "$SEED" --max-seconds 500 --gpus 0 --init-from "$INIT" --off-times-for esd=late psd-m=late psd-u=late \
  --save "$P" --results "$P/res" --docs "$OUT/families-s$SEED.md" --log-dir "$P/logs" > "$OUT/train-s$SEED.log" 2>&1
cp "$P/logs/scores.json" "$OUT/families-s$SEED.json"
tar czf "$OUT/$TAG-s$SEED.tgz" -C "$P" $(cd "$P" && ls -d checkerboard-*)
sed -n '/checkerboard KL/,$p' "$OUT/train-s$SEED.log" | head -14
