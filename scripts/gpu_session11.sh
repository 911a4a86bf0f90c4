#!/usr/bin/env bash
# GPU session 11 (one GPU, ~2 minutes): the trainer's --cuda-graph and --compile on the GPU.
#   tests/test_graphs.py with the split tangent pass (the default since session 10); then the
#   same 2-D LSD run (300 steps, batch 8192, seed 0) eagerly, with --cuda-graph, and with
#   --cuda-graph --compile: the three loss logs should agree (same random numbers; compiling
#   changes only rounding) and the graphed runs be faster per step.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD"
mkdir -p runs
timeout 60 python3 -m pytest tests/test_graphs.py -q -p no:cacheprovider 2>&1 | tail -n 3
c="--data checkerboard --method lsd --steps 300 --batch-size 8192 --device cuda --log-every 100 --eval-n 0 --seed 0"
for mode in "" "--cuda-graph" "--cuda-graph --compile"; do
  name=$(echo "x $mode" | tr -d ' -')
  timeout 100 python3 -m flowmaps train $c $mode --out runs/$name > runs/$name.log 2>&1
  echo "== $mode"; python3 - "runs/$name/log.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
for r in rows:
    print(r["step"], round(r["loss"], 5), "step_time", round(r["step_time"] * 1000, 2), "ms")
PY
done
