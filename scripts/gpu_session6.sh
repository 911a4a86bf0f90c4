#!/usr/bin/env bash
# GPU session 6 (2 x H100, ~9 minutes).
#   GPU 0: checkerboard time to quality with TF32 and the annealed lr, saving the EMA models:
#          LSD for 200 s, then PSD-M and ESD for 130 s each.
#   GPU 1: PSD-M on Fashion-MNIST continued from checkpoints/fmnist-psd-m for 400 s (the same
#          training time as LSD's tangent-pass stage in session 5), then its FID table.
set -u
export PYTHONUNBUFFERED=1 FLOWMAPS_DATA="$PWD/.data/fashion-mnist" PYTHONPATH="$PWD"
mkdir -p runs
bash scripts/gpu_unpack_data.sh > /dev/null || exit 1
c="--steps 200000 --batch-size 256 --lr 1e-3 --grad-clip 1 --ema 0.999 --no-progress --log-every 200 --no-learned-weight"
(
  CUDA_VISIBLE_DEVICES=1 python3 scripts/train_images.py --method psd-m --out runs/fmnist-psd-m \
      --init-from checkpoints/fmnist-psd-m --max-seconds 400 $c > runs/psd-m.log 2>&1
  CUDA_VISIBLE_DEVICES=1 timeout 150 python3 scripts/eval_images.py runs/fmnist-psd-m/model --n 2000 \
      --table runs/t_psd.md > runs/eval_psd.log 2>&1
) &
(
  t="--device cuda --anneal 0.5 --eval-every 25 --save runs/ckpt"
  CUDA_VISIBLE_DEVICES=0 timeout 250 python3 bench/time_to_quality.py $t --methods lsd --max-seconds 200 \
      --results runs/ttq_lsd --docs runs/ttq_lsd.md > runs/ttq_lsd.log 2>&1
  CUDA_VISIBLE_DEVICES=0 timeout 320 python3 bench/time_to_quality.py $t --methods psd-m esd --max-seconds 130 \
      --results runs/ttq_other --docs runs/ttq_other.md > runs/ttq_other.log 2>&1
) &
wait
tail -n 3 runs/psd-m.log; cat runs/t_psd.md 2>/dev/null | tail -n 12; tail -n 5 runs/eval_psd.log
tail -n 14 runs/ttq_lsd.log; tail -n 22 runs/ttq_other.log
tar -cf "$OUT/session6.tar" runs/*.log runs/*.md runs/ttq_* runs/ckpt runs/fmnist-psd-m/model runs/fmnist-psd-m/log.jsonl runs/fmnist-psd-m/summary.json 2>/dev/null
ls -la "$OUT"
