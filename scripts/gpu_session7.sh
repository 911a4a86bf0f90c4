#!/usr/bin/env bash
# GPU session 7 (2 x H100, ~8 minutes). Session 6's outputs came back too large (one 17 MB tar),
# so its PSD-M and checkerboard runs are repeated with the same commands, one tar per output.
#   GPU 0: checkerboard LSD (TF32, annealed lr, stop at the paper's KL) saved; ESD on
#          Fashion-MNIST from the FM network for 120 s (the paper finds ESD unstable on images);
#          the ODE rows of the LSD model's FID table.
#   GPU 1: PSD-M on Fashion-MNIST continued for 400 s (as LSD in session 5), then its FID table.
set -u
export PYTHONUNBUFFERED=1 FLOWMAPS_DATA="$PWD/.data/fashion-mnist" PYTHONPATH="$PWD"
mkdir -p runs
bash scripts/gpu_unpack_data.sh > /dev/null || exit 1
c="--steps 200000 --batch-size 256 --lr 1e-3 --grad-clip 1 --ema 0.999 --no-progress --log-every 200 --no-learned-weight"
(
  CUDA_VISIBLE_DEVICES=1 python3 scripts/train_images.py --method psd-m --out runs/fmnist-psd-m \
      --init-from checkpoints/fmnist-psd-m --max-seconds 400 $c > runs/psd-m.log 2>&1
  CUDA_VISIBLE_DEVICES=1 timeout 100 python3 scripts/eval_images.py runs/fmnist-psd-m/model --n 2000 \
      --table runs/t_psd.md > runs/eval_psd.log 2>&1
  tar -cf "$OUT/psd.tar" runs/fmnist-psd-m/model runs/fmnist-psd-m/log.jsonl runs/fmnist-psd-m/summary.json
) &
(
  CUDA_VISIBLE_DEVICES=0 timeout 230 python3 bench/time_to_quality.py --device cuda --anneal 0.5 --eval-every 25 \
      --save runs/ckpt --methods lsd --max-seconds 200 --results runs/ttq_lsd --docs runs/ttq_lsd.md > runs/ttq_lsd.log 2>&1
  tar -cf "$OUT/cb.tar" runs/ckpt runs/ttq_lsd runs/ttq_lsd.md
  CUDA_VISIBLE_DEVICES=0 python3 scripts/train_images.py --method esd --out runs/fmnist-esd \
      --init-from checkpoints/fmnist-fm --max-seconds 110 $c > runs/esd.log 2>&1
  CUDA_VISIBLE_DEVICES=0 timeout 60 python3 scripts/eval_images.py runs/fmnist-esd/model --n 2000 --nfes 8 \
      --table runs/t_esd.md > runs/eval_esd.log 2>&1
  tar -cf "$OUT/esd.tar" runs/fmnist-esd/model runs/fmnist-esd/log.jsonl runs/fmnist-esd/summary.json
  CUDA_VISIBLE_DEVICES=0 timeout 90 python3 scripts/eval_images.py checkpoints/fmnist-lsd --n 2000 \
      --table runs/t_lsd.md > runs/eval_lsd.log 2>&1
  tar -cf "$OUT/lsd_eval.tar" checkpoints/fmnist-lsd/metrics.json checkpoints/fmnist-lsd/README.md checkpoints/fmnist-lsd/config.json
) &
wait
tail -n 2 runs/psd-m.log runs/esd.log; cat runs/t_psd.md runs/t_esd.md runs/t_lsd.md 2>/dev/null | grep "^| fmnist"
tail -n 6 runs/ttq_lsd.log
tar -cf "$OUT/logs.tar" runs/*.log runs/*.md
ls -la "$OUT"
