#!/bin/bash
# Session 24 probe: matmul precision. Every stage of the shipped checkerboard models trained with TF32
# matmuls (bench/time_to_quality.py's default): the network's value and its tangent pass (the time
# derivatives the LSD, ESD and PSD residuals are built from) are rounded to TF32's 10-bit mantissa.
# From the shipped 290,000-step weights, 10,000 steps with plain float32 matmuls (--no-tf32), seed 8,
# lr 1.25e-4 annealed over the second half, EMA 0.999: the controls are the same runs with TF32
# (sessions 21-23, bench/results/families_ema_probe.json and docs/benchmarks.md), which reproduce to
# every printed digit. Usage: bash bench/probes/precision.sh METHOD [METHOD ...] (two per call fit
# the device's 10 minutes: a float32 step is about 2.5x a TF32 one).
set -u
P=$OUT/precision
COMMON="--device cuda --max-seconds 520 --eval-every 520 --seed 8 --init-from checkpoints --lr 1.25e-4 --anneal 0.5"
source "$(dirname "$0")/common.sh"
mkdir -p "$P"
for method in "$@"; do
  probe_run "${method}-fp32" "$method" 10000 --no-tf32 &
done
wait
