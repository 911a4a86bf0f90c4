#!/usr/bin/env bash
# GPU session 12 (2 GPUs, ~9.5 minutes): LSD on Fashion-MNIST with the step compiled and replayed as
# a CUDA graph (the trainer's --compile --cuda-graph, first image run with both), two variants side
# by side from the shipped LSD model, 330 s each:
#   GPU 0: eta 0.75 (the recipe so far);  GPU 1: eta 0.5 (half the batch off the diagonal: the
#   network starts from a trained velocity, so more of each step can go to the jumps).
# Then the FID at N = 1/2/4/8/16 of both (2,000 samples; the ODE at 32 NFE only), and the CUDA-graph
# tests on both GPUs (the 2-GPU graph-against-eager test is new).
set -u
export PYTHONUNBUFFERED=1 FLOWMAPS_DATA="$PWD/.data/fashion-mnist" PYTHONPATH="$PWD"
mkdir -p runs
bash scripts/gpu_unpack_data.sh > /dev/null || exit 1
nvidia-smi --query-gpu=name --format=csv,noheader
c="--steps 200000 --batch-size 256 --lr 1e-3 --grad-clip 1 --ema 0.999 --no-progress --log-every 200 --no-learned-weight"
c="$c --init-from checkpoints/fmnist-lsd --max-seconds 330 --cuda-graph --compile"
run() {  # gpu eta name
  CUDA_VISIBLE_DEVICES=$1 timeout 380 python3 scripts/train_images.py --method lsd --eta $2 --out runs/$3 $c \
      --note "Stage 5: 330 s more LSD (eta $2) with the UNet compiled and the step replayed as a CUDA graph (TF32, EMA 0.999)." \
      > runs/$3.log 2>&1
  CUDA_VISIBLE_DEVICES=$1 timeout 100 python3 scripts/eval_images.py runs/$3/model --n 2000 --nfes 32 \
      --table runs/t_$3.md > runs/eval_$3.log 2>&1
}
run 0 0.75 lsd-eta75 &
run 1 0.5 lsd-eta50 &
wait
for n in lsd-eta75 lsd-eta50; do
  echo "== $n"; tail -n 3 runs/$n.log | cut -c1-600; grep "^| " runs/t_$n.md | tail -n 1
  python3 - runs/$n/log.jsonl <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
for r in rows[:: max(1, len(rows) // 6)] + rows[-1:]:
    print(r["step"], round(r["time"], 1), "s loss", round(r["loss"], 3), "step", round(r["step_time"] * 1000, 1), "ms")
PY
done
timeout 110 python3 -m pytest tests/test_graphs.py -q -p no:cacheprovider > runs/test_graphs.log 2>&1
tail -n 4 runs/test_graphs.log
for n in lsd-eta75 lsd-eta50; do
  tar -cf "$OUT/$n.tar" runs/$n/model runs/$n/log.jsonl runs/$n/summary.json runs/t_$n.md
done
tar -cf "$OUT/logs.tar" runs/*.log
ls -la "$OUT"
