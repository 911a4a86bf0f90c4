#!/usr/bin/env bash
# GPU session 15 (2 GPUs), four calls:
#   bash scripts/gpu_session15.sh train   LSD stage 7: the shipped LSD continued on both GPUs at once
#                                         for 480 s (torchrun, global batch 512, a CUDA graph on each
#                                         rank, the lr falling linearly to 0 over the second half),
#                                         the recipe of stage 6.
#   bash scripts/gpu_session15.sh eval    the target check on 5,000 samples, noise seed 1 (as in
#                                         session 14): the flow-matching baseline's Heun ODE on the
#                                         cosine grid (64, 128, 256 NFE) and on the uniform grid at
#                                         256 NFE; the new LSD at N = 4 on both grids; then the new
#                                         LSD's full table (2,000 samples, noise seed 0).
#   bash scripts/gpu_session15.sh psdm    PSD-M given the same extra images (see below), its table,
#                                         and the baseline's cosine-grid ODE on 2,000 samples.
#   bash scripts/gpu_session15.sh seed2   the target check again on 5,000 samples, noise seed 2.
# The eval call reads the stage-7 model from runs/fmnist-lsd/model (carried back in if the machine
# was not kept between the calls).
set -u
export PYTHONUNBUFFERED=1 FLOWMAPS_DATA="$PWD/.data/fashion-mnist" PYTHONPATH="$PWD"
mkdir -p runs
bash scripts/gpu_unpack_data.sh > /dev/null || exit 1
nvidia-smi --query-gpu=name --format=csv,noheader
case "${1:-}" in
train)
    timeout 560 torchrun --standalone --nproc_per_node=2 scripts/train_images.py --method lsd --eta 0.75 \
        --out runs/fmnist-lsd --init-from checkpoints/fmnist-lsd --steps 400000 --batch-size 512 --lr 1e-3 \
        --grad-clip 1 --ema 0.999 --no-progress --log-every 200 --no-learned-weight --max-seconds 480 \
        --anneal-from 0.5 --cuda-graph \
        --note "Stage 7: 480 s more of LSD on 2 GPUs (torchrun, global batch 512), the step replayed as a CUDA graph on each rank, the lr back at 1e-3 and falling linearly to 0 over the last 240 s." \
        > runs/lsd7.log 2>&1
    tail -n 3 runs/lsd7.log | cut -c1-900
    python3 - runs/fmnist-lsd/log.jsonl <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
for r in rows[:: max(1, len(rows) // 8)] + rows[-1:]:
    print(r["step"], round(r["time"], 1), "s loss", round(r["loss"], 3), "lr", round(r["lr"], 6))
PY
    tar -cf "$OUT/lsd7.tar" runs/fmnist-lsd/model runs/fmnist-lsd/log.jsonl runs/fmnist-lsd/summary.json runs/lsd7.log
    ;;
eval)
    test -f runs/fmnist-lsd/model/model.safetensors || { echo "no stage-7 model"; exit 1; }
    # A copy of the baseline per GPU: eval_images.py merges its rows into the folder's metrics.json.
    cp -r checkpoints/fmnist-fm runs/fm-a && cp -r checkpoints/fmnist-fm runs/fm-b
    CUDA_VISIBLE_DEVICES=0 timeout 330 python3 scripts/eval_images.py runs/fm-a --n 5000 --seed 1 \
        --steps "" --nfes 128,256 --grids cosine --table runs/t_fm_cos.md > runs/eval_fm_a.log 2>&1 &
    (
        CUDA_VISIBLE_DEVICES=1 timeout 200 python3 scripts/eval_images.py runs/fm-b --n 5000 --seed 1 \
            --steps "" --nfes 256 --table runs/t_fm_b.md > runs/eval_fm_b.log 2>&1
        CUDA_VISIBLE_DEVICES=1 timeout 100 python3 scripts/eval_images.py runs/fm-b --n 5000 --seed 1 \
            --steps "" --nfes 64 --grids cosine --table runs/t_fm_b.md > runs/eval_fm_b2.log 2>&1
        cp -r runs/fmnist-lsd/model runs/lsd-check
        CUDA_VISIBLE_DEVICES=1 timeout 60 python3 scripts/eval_images.py runs/lsd-check --n 5000 --seed 1 \
            --steps 4 --nfes "" --grids uniform,cosine --table runs/t_lsd_check.md > runs/eval_lsd_check.log 2>&1
    ) &
    wait
    CUDA_VISIBLE_DEVICES=0 timeout 150 python3 scripts/eval_images.py runs/fmnist-lsd/model --n 2000 \
        --grids uniform,cosine --steps 1,2,4,8,16 --table runs/t_lsd.md > runs/eval_lsd.log 2>&1
    for t in runs/t_fm_cos.md runs/t_fm_b.md runs/t_lsd_check.md runs/t_lsd.md; do
        echo "== $t"; grep "^| " "$t" | head -n 20
    done
    tar -cf "$OUT/eval.tar" runs/fmnist-lsd/model runs/fm-a/metrics.json runs/fm-b/metrics.json \
        runs/lsd-check/metrics.json runs/t_*.md runs/eval_*.log
    ;;
psdm)
    # PSD-M given the same extra training images as LSD's stage 7 (7,593 steps at batch 512), the
    # same recipe, so that the LSD / PSD-M comparison stays at equal images; then its table, and on
    # the other GPU the baseline's cosine-grid ODE rows on the table's 2,000 samples (noise seed 0).
    timeout 500 torchrun --standalone --nproc_per_node=2 scripts/train_images.py --method psd-m \
        --out runs/fmnist-psd-m --init-from checkpoints/fmnist-psd-m --steps 7593 --batch-size 512 --lr 1e-3 \
        --grad-clip 1 --ema 0.999 --no-progress --log-every 200 --no-learned-weight --max-seconds 450 \
        --anneal-from 0.5 --cuda-graph \
        --note "Stage 6: 7,593 more steps of PSD-M on 2 GPUs (torchrun, global batch 512), the same extra images as LSD's stage 7, the step replayed as a CUDA graph on each rank, the lr back at 1e-3 and falling linearly to 0 over the second half." \
        > runs/psdm6.log 2>&1
    tail -n 2 runs/psdm6.log | cut -c1-900
    cp -r checkpoints/fmnist-fm runs/fm-c
    CUDA_VISIBLE_DEVICES=0 timeout 150 python3 scripts/eval_images.py runs/fmnist-psd-m/model --n 2000 \
        --grids uniform,cosine --steps 1,2,4,8,16 --table runs/t_psdm.md > runs/eval_psdm.log 2>&1 &
    CUDA_VISIBLE_DEVICES=1 timeout 150 python3 scripts/eval_images.py runs/fm-c --n 2000 \
        --steps "" --nfes 8,16,32,64,128 --grids cosine --table runs/t_fm_c.md > runs/eval_fm_c.log 2>&1 &
    wait
    for t in runs/t_psdm.md runs/t_fm_c.md; do echo "== $t"; grep "^| " "$t" | head -n 20; done
    tar -cf "$OUT/psdm.tar" runs/fmnist-psd-m/model runs/fmnist-psd-m/log.jsonl runs/fm-c/metrics.json \
        runs/t_psdm.md runs/t_fm_c.md runs/psdm6.log runs/eval_*.log
    ;;
seed2)
    # The target once more on other noise (5,000 samples, noise seed 2): the baseline's Heun ODE at
    # 128 and 256 NFE on both grids against the stage-7 LSD at N = 4 on both grids.
    test -f runs/fmnist-lsd/model/model.safetensors || { echo "no stage-7 model"; exit 1; }
    cp -r checkpoints/fmnist-fm runs/fm-d && cp -r checkpoints/fmnist-fm runs/fm-e && cp -r runs/fmnist-lsd/model runs/lsd-s2
    CUDA_VISIBLE_DEVICES=0 timeout 280 python3 scripts/eval_images.py runs/fm-d --n 5000 --seed 2 \
        --steps "" --nfes 128,256 --table runs/t_s2_fm_u.md > runs/eval_s2_a.log 2>&1 &
    (
        CUDA_VISIBLE_DEVICES=1 timeout 240 python3 scripts/eval_images.py runs/fm-e --n 5000 --seed 2 \
            --steps "" --nfes 128,256 --grids cosine --table runs/t_s2_fm_c.md > runs/eval_s2_b.log 2>&1
        CUDA_VISIBLE_DEVICES=1 timeout 60 python3 scripts/eval_images.py runs/lsd-s2 --n 5000 --seed 2 \
            --steps 4 --nfes "" --grids uniform,cosine --table runs/t_s2_lsd.md > runs/eval_s2_c.log 2>&1
    ) &
    wait
    for t in runs/t_s2_*.md; do echo "== $t"; grep "^| " "$t" | grep -v "| 2000 |" | head -n 8; done
    tar -cf "$OUT/seed2.tar" runs/fm-d/metrics.json runs/fm-e/metrics.json runs/lsd-s2/metrics.json runs/t_s2_*.md runs/eval_s2_*.log
    ;;
*)
    echo "usage: $0 train|eval|psdm|seed2"; exit 2 ;;
esac
ls -la "$OUT"
