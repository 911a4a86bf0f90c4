#!/usr/bin/env bash
# GPU session 14 (2 GPUs, ~6 minutes; a first try of 450 s was cut off when the machine was taken
# back): PSD-M given part of the extra GPU time that LSD had in sessions 12-13 (LSD: 330 s on one
# GPU, ~150 s of it compiling, then 410 s on two): the shipped PSD-M continued on both GPUs at once for 280 s (torchrun, global batch
# 512, the step replayed as a CUDA graph on each rank, the lr falling linearly to 0 over the
# second half), then its full FID table (N = 1..16, ODE 8..128 NFE, 2,000 samples).
set -u
export PYTHONUNBUFFERED=1 FLOWMAPS_DATA="$PWD/.data/fashion-mnist" PYTHONPATH="$PWD"
mkdir -p runs
bash scripts/gpu_unpack_data.sh > /dev/null || exit 1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 320 torchrun --standalone --nproc_per_node=2 scripts/train_images.py --method psd-m \
    --out runs/fmnist-psd-m --init-from checkpoints/fmnist-psd-m --steps 200000 --batch-size 512 --lr 1e-3 \
    --grad-clip 1 --ema 0.999 --no-progress --log-every 200 --no-learned-weight --max-seconds 280 \
    --anneal-from 0.5 --cuda-graph \
    --note "Stage 5: 280 s of PSD-M on 2 GPUs (torchrun, global batch 512), the step replayed as a CUDA graph on each rank, the lr falling linearly to 0 over the last 140 s (LSD had 330 s on one GPU and 410 s on two in its stages 5-6)." \
    > runs/psdm2.log 2>&1
tail -n 3 runs/psdm2.log | cut -c1-900
# GPU 0: PSD-M's table; GPU 1: the LSD target checked on other noise with more samples (5,000, seed 1):
# LSD at N = 4 against the flow-matching baseline's ODE at 64 and 128 NFE (checkpoints/fmnist-lsd is
# session 13's model here).
CUDA_VISIBLE_DEVICES=0 timeout 100 python3 scripts/eval_images.py runs/fmnist-psd-m/model --n 2000 \
    --table runs/t_psdm.md > runs/eval_psdm.log 2>&1 &
CUDA_VISIBLE_DEVICES=1 timeout 100 python3 scripts/eval_images.py checkpoints/fmnist-lsd checkpoints/fmnist-fm \
    --n 5000 --seed 1 --steps 4 --nfes 64,128 --table runs/t_check.md > runs/eval_check.log 2>&1 &
wait
grep "^| " runs/t_check.md | head -n 8
grep "^| " runs/t_psdm.md | head -n 14
python3 - runs/fmnist-psd-m/log.jsonl <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
for r in rows[:: max(1, len(rows) // 8)] + rows[-1:]:
    print(r["step"], round(r["time"], 1), "s loss", round(r["loss"], 3), "lr", round(r["lr"], 6))
PY
tar -cf "$OUT/psdm.tar" runs/fmnist-psd-m/model runs/fmnist-psd-m/log.jsonl runs/fmnist-psd-m/summary.json runs/t_psdm.md runs/t_check.md
tar -cf "$OUT/logs.tar" runs/*.log
ls -la "$OUT"
