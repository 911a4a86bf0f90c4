#!/usr/bin/env bash
# GPU session 13 (2 GPUs, ~9.5 minutes): LSD on both GPUs at once, continuing session 12's eta 0.75
# run (it beat eta 0.5 at every N; checkpoints/fmnist-lsd held that model when this ran).
# torchrun, global batch 512 (256 a GPU, as each run of session 12 had alone), the step replayed as
# a CUDA graph on each rank with the gradient all-reduce after it (no torch.compile: its ~150 s of
# compiling would eat what it saves in a run this short), 410 s with the learning rate falling
# linearly to 0 over the second half (--anneal-from 0.5). Then the full FID table (N = 1..16,
# ODE 8..128 NFE, 2,000 samples).
set -u
export PYTHONUNBUFFERED=1 FLOWMAPS_DATA="$PWD/.data/fashion-mnist" PYTHONPATH="$PWD"
mkdir -p runs
bash scripts/gpu_unpack_data.sh > /dev/null || exit 1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 450 torchrun --standalone --nproc_per_node=2 scripts/train_images.py --method lsd --eta 0.75 \
    --out runs/fmnist-lsd --init-from checkpoints/fmnist-lsd --steps 200000 --batch-size 512 --lr 1e-3 \
    --grad-clip 1 --ema 0.999 --no-progress --log-every 200 --no-learned-weight --max-seconds 410 \
    --anneal-from 0.5 --cuda-graph \
    --note "Stage 6: 410 s of LSD on 2 GPUs (torchrun, global batch 512), the step replayed as a CUDA graph on each rank, the lr falling linearly to 0 over the last 205 s." \
    > runs/lsd2.log 2>&1
tail -n 3 runs/lsd2.log | cut -c1-900
timeout 130 python3 scripts/eval_images.py runs/fmnist-lsd/model --n 2000 --table runs/t_lsd.md > runs/eval_lsd.log 2>&1
grep "^| " runs/t_lsd.md | head -n 14
python3 - runs/fmnist-lsd/log.jsonl <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
for r in rows[:: max(1, len(rows) // 8)] + rows[-1:]:
    print(r["step"], round(r["time"], 1), "s loss", round(r["loss"], 3), "lr", round(r["lr"], 6))
PY
tar -cf "$OUT/lsd.tar" runs/fmnist-lsd/model runs/fmnist-lsd/log.jsonl runs/fmnist-lsd/summary.json runs/t_lsd.md
tar -cf "$OUT/logs.tar" runs/*.log
ls -la "$OUT"
