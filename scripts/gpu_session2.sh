#!/usr/bin/env bash
# GPU session 2: UNet step cost per backend, then the shipped Fashion-MNIST models (LSD alone on
# GPU 0; PSD-M and FM sharing GPU 1) and the shipped checkerboard models (time-to-quality runs,
# GPU 0 beside LSD). Outputs tarred into $OUT.
set -u
export PYTHONUNBUFFERED=1 FLOWMAPS_DATA="$PWD/.data/fashion-mnist" PYTHONPATH="$PWD"
IMG_SECONDS=${IMG_SECONDS:-330}
NG=$(nvidia-smi -L | wc -l); second=$((1 % NG))
mkdir -p runs
CUDA_VISIBLE_DEVICES=0 timeout 120 python3 scripts/unet_step_bench.py --device cuda --batch 256 | tee runs/unet_step_bench.jsonl
backend=$(grep -o '"fastest_lsd_backend": "[a-z]*"' runs/unet_step_bench.jsonl | grep -o '[a-z]*"$' | tr -d '"')
backend=${backend:-jvp}; echo "LSD backend: $backend"
common="--steps 200000 --max-seconds $IMG_SECONDS --batch-size 256 --lr 1e-3 --grad-clip 1 --ema 0.999 --no-progress --log-every 200"
CUDA_VISIBLE_DEVICES=0 python3 scripts/train_images.py --method lsd --backend "$backend" --out runs/fmnist-lsd $common > runs/lsd.log 2>&1 &
CUDA_VISIBLE_DEVICES=$second python3 scripts/train_images.py --method psd-m --out runs/fmnist-psd-m $common > runs/psd-m.log 2>&1 &
CUDA_VISIBLE_DEVICES=$second python3 scripts/train_images.py --method fm --out runs/fmnist-fm $common > runs/fm.log 2>&1 &
CUDA_VISIBLE_DEVICES=0 timeout 420 python3 bench/time_to_quality.py --device cuda --methods lsd psd-m esd fm \
  --max-seconds 75 --save runs/checkerboard > runs/ttq.log 2>&1 &
sleep 90; nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv
wait
tail -n 4 runs/*.log
for m in lsd psd-m fm; do tail -n 1 runs/fmnist-$m/log.jsonl; done
if [ -n "${OUT:-}" ]; then
  for m in lsd psd-m fm; do tar -cf "$OUT/fmnist-$m.tar" -C runs/fmnist-$m model log.jsonl summary.json; done
  tar -cf "$OUT/checkerboard.tar" -C runs checkerboard
  tar -cf "$OUT/bench.tar" bench/results docs/benchmarks.md runs/*.log runs/*.jsonl
  ls -la "$OUT"
fi
