#!/usr/bin/env bash
# GPU session 9 (2 GPUs, ~9.5 minutes).
#   GPU 0: the CUDA-graph tests; bench/step_cost.py (MLP + UNet, graph rows now for ESD too, the
#          tangent pass with stacked or split convs, UNet batch scaling); then the UNet rows with
#          torch.compile of the network inside the CUDA graph (a section of their own).
#   GPU 1: LSD on Fashion-MNIST continued from the shipped model for 380 s with the training step
#          replayed as a CUDA graph, then its FID table.
set -u
export PYTHONUNBUFFERED=1 FLOWMAPS_DATA="$PWD/.data/fashion-mnist" PYTHONPATH="$PWD"
mkdir -p runs
bash scripts/gpu_unpack_data.sh > /dev/null || exit 1
nvidia-smi --query-gpu=name --format=csv,noheader
c="--steps 200000 --batch-size 256 --lr 1e-3 --grad-clip 1 --ema 0.999 --no-progress --log-every 200 --no-learned-weight"
(
  CUDA_VISIBLE_DEVICES=1 timeout 420 python3 scripts/train_images.py --method lsd --out runs/fmnist-lsd \
      --init-from checkpoints/fmnist-lsd --max-seconds 380 --cuda-graph $c \
      --note "Stage 4: 380 s more LSD with the training step replayed as a CUDA graph (tangent pass, TF32, EMA 0.999)." \
      > runs/lsd.log 2>&1
  CUDA_VISIBLE_DEVICES=1 timeout 110 python3 scripts/eval_images.py runs/fmnist-lsd/model --n 2000 \
      --table runs/t_lsd.md > runs/eval_lsd.log 2>&1
  tar -cf "$OUT/lsd.tar" runs/fmnist-lsd/model runs/fmnist-lsd/log.jsonl runs/fmnist-lsd/summary.json
) &
(
  CUDA_VISIBLE_DEVICES=0 timeout 60 python3 -m pytest tests/test_graphs.py -q -p no:cacheprovider > runs/test_graphs.log 2>&1
  CUDA_VISIBLE_DEVICES=0 timeout 340 python3 bench/step_cost.py --device cuda --unet-scaling 64 1024 --repeats 8 \
      --inner 2 --results runs/bench --docs runs/bench.md > runs/bench.log 2>&1
  CUDA_VISIBLE_DEVICES=0 timeout 170 python3 bench/step_cost.py --device cuda --no-mlp --unet-compile \
      --variants tf32+compile-net+graph --tag compile --repeats 8 --inner 2 --results runs/bench \
      --docs runs/bench_compile.md > runs/bench_compile.log 2>&1
) &
wait
tail -n 4 runs/test_graphs.log
tail -n 2 runs/lsd.log; grep "^| fmnist" runs/t_lsd.md
grep -E "unet" runs/bench.log | grep "|" | tail -n 40
tail -n 12 runs/bench_compile.log
tar -cf "$OUT/logs.tar" runs/*.log runs/*.md runs/bench
ls -la "$OUT"
