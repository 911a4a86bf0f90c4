#!/usr/bin/env bash
# GPU session 4 (short): LSD and PSD-M started from the flow-matching network of session 3,
# without the learned loss weight (which let both collapse in sessions 2-3), then a quick FID.
set -u
export PYTHONUNBUFFERED=1 FLOWMAPS_DATA="$PWD/.data/fashion-mnist" PYTHONPATH="$PWD"
T=${T:-150}
mkdir -p runs
c="--steps 200000 --max-seconds $T --batch-size 256 --lr 1e-3 --grad-clip 1 --ema 0.995 --no-progress --log-every 100 --no-learned-weight --init-from .data/prev/fmnist-fm/model"
CUDA_VISIBLE_DEVICES=0 python3 scripts/train_images.py --method lsd --backend fd --out runs/fmnist-lsd $c > runs/lsd.log 2>&1 &
CUDA_VISIBLE_DEVICES=1 python3 scripts/train_images.py --method psd-m --out runs/fmnist-psd-m $c > runs/psd-m.log 2>&1 &
wait
E="--n 2000 --classifier checkpoints/fid-classifier --nfes 8,16"
CUDA_VISIBLE_DEVICES=0 timeout 60 python3 scripts/eval_images.py runs/fmnist-lsd/model $E --table runs/t0.md > runs/eval0.log 2>&1 &
CUDA_VISIBLE_DEVICES=1 timeout 60 python3 scripts/eval_images.py runs/fmnist-psd-m/model $E --table runs/t1.md > runs/eval1.log 2>&1 &
wait
tail -n 3 runs/lsd.log runs/psd-m.log; cat runs/t0.md runs/t1.md
for m in lsd psd-m; do [ -d runs/fmnist-$m/model ] && tar -cf "$OUT/fmnist-$m.tar" -C runs/fmnist-$m model log.jsonl summary.json; done
tar -cf "$OUT/logs.tar" runs/*.log runs/*.md
