#!/usr/bin/env bash
# GPU session 5 (2 x H100, ~9 minutes): benchmarks after the UNet tangent pass, a checkerboard
# probe with TF32 + an annealed lr, and LSD on Fashion-MNIST continued with the tangent pass.
#   GPU 0: bench/step_cost.py (MLP 512x4 at batch 65,536 and the UNet at batch 256), then
#          bench/time_to_quality.py for 200 s (a probe; the 9-minute run is session 6).
#   GPU 1: scripts/train_images.py --method lsd from checkpoints/fmnist-lsd, then a 2k-sample FID.
set -u
export PYTHONUNBUFFERED=1 FLOWMAPS_DATA="$PWD/.data/fashion-mnist" PYTHONPATH="$PWD"
T_LSD=${T_LSD:-400}
mkdir -p runs
bash scripts/gpu_unpack_data.sh || exit 1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
c="--steps 200000 --batch-size 256 --lr 1e-3 --grad-clip 1 --ema 0.999 --no-progress --log-every 200 --no-learned-weight"
(
  CUDA_VISIBLE_DEVICES=1 python3 scripts/train_images.py --method lsd --out runs/fmnist-lsd --init-from checkpoints/fmnist-lsd \
      --max-seconds "$T_LSD" $c > runs/lsd.log 2>&1
  CUDA_VISIBLE_DEVICES=1 timeout 120 python3 scripts/eval_images.py runs/fmnist-lsd/model --n 2000 --nfes 8 --table runs/t_lsd.md > runs/eval_lsd.log 2>&1
) &
(
  CUDA_VISIBLE_DEVICES=0 timeout 290 python3 bench/step_cost.py --device cuda --repeats 10 --inner 2 \
      --results runs/bench --docs runs/bench.md > runs/step_cost.log 2>&1
  CUDA_VISIBLE_DEVICES=0 timeout 260 python3 bench/time_to_quality.py --device cuda --methods lsd --max-seconds 200 \
      --anneal 0.5 --eval-every 25 --results runs/bench --docs runs/ttq_probe.md > runs/ttq_probe.log 2>&1
) &
wait
tail -n 4 runs/lsd.log; cat runs/t_lsd.md 2>/dev/null; tail -n 45 runs/step_cost.log; tail -n 16 runs/ttq_probe.log
tar -cf "$OUT/session5.tar" runs/*.log runs/*.md runs/bench runs/fmnist-lsd/model runs/fmnist-lsd/log.jsonl runs/fmnist-lsd/summary.json 2>/dev/null
ls -la "$OUT"
