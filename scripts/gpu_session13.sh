#!/usr/bin/env bash
# GPU session 13 (2 GPUs, ~9.5 minutes): the better variant of session 12 (lower FID at N = 4)
# continued on both GPUs at once: torchrun, global batch 512 (256 a GPU, as each run of session 12
# had alone), the step compiled and replayed as a CUDA graph on each rank, 400 s with the
# learning rate falling linearly to 0 over the second half (--anneal-from 0.5). Then the full FID
# table (N = 1..16, ODE 8..128 NFE, 2,000 samples).
# Reads session 12's models from runs/ (kept on a warm machine) or from .carry/ (carried back).
set -u
export PYTHONUNBUFFERED=1 FLOWMAPS_DATA="$PWD/.data/fashion-mnist" PYTHONPATH="$PWD"
mkdir -p runs
bash scripts/gpu_unpack_data.sh > /dev/null || exit 1
nvidia-smi --query-gpu=name --format=csv,noheader
for n in lsd-eta75 lsd-eta50; do
  [ -d runs/$n/model ] || { mkdir -p runs/$n && cp -r .carry/$n/model runs/$n/ && cp .carry/$n/t_$n.md runs/; }
done
pick=$(python3 - <<'PY'
best = None
for name in ("lsd-eta75", "lsd-eta50"):
    for line in open(f"runs/t_{name}.md"):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 3 and cells[1] == "flow map" and cells[2] == "4":
            fid4 = float(cells[3])
            if best is None or fid4 < best[0]:
                best = (fid4, name)
print(best[1])
PY
)
eta=$([ "$pick" = lsd-eta50 ] && echo 0.5 || echo 0.75)
echo "continuing $pick (eta $eta)"
torchrun --standalone --nproc_per_node=2 scripts/train_images.py --method lsd --eta $eta --out runs/fmnist-lsd \
    --init-from runs/$pick/model --steps 200000 --batch-size 512 --lr 1e-3 --grad-clip 1 --ema 0.999 \
    --no-progress --log-every 200 --no-learned-weight --max-seconds 400 --anneal-from 0.5 --cuda-graph --compile \
    --note "Stage 6: 400 s of LSD (eta $eta) on 2 GPUs (torchrun, global batch 512), compiled and replayed as a CUDA graph on each rank, the lr falling linearly to 0 over the last 200 s." \
    > runs/lsd2.log 2>&1
tail -n 3 runs/lsd2.log | cut -c1-800
timeout 130 python3 scripts/eval_images.py runs/fmnist-lsd/model --n 2000 --table runs/t_lsd.md > runs/eval_lsd.log 2>&1
grep "^| " runs/t_lsd.md | tail -n 1
python3 - runs/fmnist-lsd/log.jsonl <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
for r in rows[:: max(1, len(rows) // 8)] + rows[-1:]:
    print(r["step"], round(r["time"], 1), "s loss", round(r["loss"], 3), "lr", r["lr"], "step", round(r["step_time"] * 1000, 1), "ms")
PY
tar -cf "$OUT/lsd.tar" runs/fmnist-lsd/model runs/fmnist-lsd/log.jsonl runs/fmnist-lsd/summary.json runs/t_lsd.md
tar -cf "$OUT/logs.tar" runs/*.log
ls -la "$OUT"
