#!/usr/bin/env bash
# GPU session 1: the FID feature network and the three shipped Fashion-MNIST models, trained
# side by side (one process per model) for the same wall time. Run from the repo root on the
# GPU machine with the data carried in .data/fashion-mnist; outputs go to runs/ and, tarred, to $OUT.
set -u
export PYTHONUNBUFFERED=1 FLOWMAPS_DATA="$PWD/.data/fashion-mnist"
SECONDS_PER_MODEL=${SECONDS_PER_MODEL:-420}
NG=$(nvidia-smi -L | wc -l)
nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__)"
mkdir -p runs
second=$((1 % NG))
CUDA_VISIBLE_DEVICES=$second python3 bench/train_fid_classifier.py --out runs/fid-classifier --device cuda \
  --data-root .data/fashion-mnist --epochs 8 > runs/fid-classifier.log 2>&1 &
common="--steps 200000 --max-seconds $SECONDS_PER_MODEL --batch-size 256 --lr 1e-3 --grad-clip 1 --ema 0.999 --no-progress --log-every 200"
CUDA_VISIBLE_DEVICES=0 python3 scripts/train_images.py --method lsd --out runs/fmnist-lsd $common > runs/lsd.log 2>&1 &
CUDA_VISIBLE_DEVICES=$second python3 scripts/train_images.py --method psd-m --out runs/fmnist-psd-m $common > runs/psd-m.log 2>&1 &
CUDA_VISIBLE_DEVICES=$second python3 scripts/train_images.py --method fm --out runs/fmnist-fm $common > runs/fm.log 2>&1 &
sleep 60; nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv
wait
tail -n 3 runs/*.log
for m in lsd psd-m fm; do tail -n 1 runs/fmnist-$m/log.jsonl; done
if [ -n "${OUT:-}" ]; then
  for m in lsd psd-m fm; do
    tar -cf "$OUT/fmnist-$m.tar" -C runs/fmnist-$m model log.jsonl summary.json
  done
  tar -cf "$OUT/fid-classifier.tar" -C runs fid-classifier fid-classifier.log
  tar -cf "$OUT/logs.tar" runs/*.log
  ls -la "$OUT"
fi
