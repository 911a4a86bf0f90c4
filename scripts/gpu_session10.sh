#!/usr/bin/env bash
# GPU session 10 (2 GPUs, ~9.5 minutes).
#   GPU 0: the UNet rows with torch.compile of the network inside the CUDA graph (session 9 ran
#          out of time compiling the tangent pass; rows are now saved as each one finishes).
#   GPU 1: PSD-M on Fashion-MNIST continued from the shipped model for 380 s with the training
#          step replayed as a CUDA graph (as LSD in session 9: equal total training time), FID table.
set -u
export PYTHONUNBUFFERED=1 FLOWMAPS_DATA="$PWD/.data/fashion-mnist" PYTHONPATH="$PWD"
mkdir -p runs
bash scripts/gpu_unpack_data.sh > /dev/null || exit 1
nvidia-smi --query-gpu=name --format=csv,noheader
c="--steps 200000 --batch-size 256 --lr 1e-3 --grad-clip 1 --ema 0.999 --no-progress --log-every 200 --no-learned-weight"
(
  CUDA_VISIBLE_DEVICES=1 timeout 420 python3 scripts/train_images.py --method psd-m --out runs/fmnist-psd-m \
      --init-from checkpoints/fmnist-psd-m --max-seconds 380 --cuda-graph $c \
      --note "Stage 4: 380 s more PSD-M with the training step replayed as a CUDA graph (TF32, EMA 0.999)." \
      > runs/psd-m.log 2>&1
  CUDA_VISIBLE_DEVICES=1 timeout 110 python3 scripts/eval_images.py runs/fmnist-psd-m/model --n 2000 \
      --table runs/t_psdm.md > runs/eval_psdm.log 2>&1
  tar -cf "$OUT/psdm.tar" runs/fmnist-psd-m/model runs/fmnist-psd-m/log.jsonl runs/fmnist-psd-m/summary.json
) &
(
  CUDA_VISIBLE_DEVICES=0 timeout 530 python3 bench/step_cost.py --device cuda --no-mlp --unet-compile \
      --variants tf32+compile-net+graph --tag compile --repeats 8 --inner 2 --results runs/bench \
      --docs runs/bench_compile.md > runs/bench_compile.log 2>&1
) &
wait
tail -n 2 runs/psd-m.log; grep "^| fmnist" runs/t_psdm.md
grep -v Warn runs/bench_compile.log | grep "ms$"
tar -cf "$OUT/logs.tar" runs/*.log runs/*.md runs/bench
ls -la "$OUT"
