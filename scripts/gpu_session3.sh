#!/usr/bin/env bash
# GPU session 3: continue the Fashion-MNIST models from session 2 (LSD now with the central-
# difference backend, 5x cheaper per step than the UNet JVP in eager PyTorch), train the
# checkerboard LSD model alone, score FID, and check 1 vs 2 GPUs. Outputs tarred into $OUT.
set -u
export PYTHONUNBUFFERED=1 FLOWMAPS_DATA="$PWD/.data/fashion-mnist" PYTHONPATH="$PWD"
T=${T:-220}
P=.data/prev
mkdir -p runs
finish() {
  [ -n "${OUT:-}" ] || return
  for m in lsd psd-m fm; do [ -d runs/fmnist-$m/model ] && tar -cf "$OUT/fmnist-$m.tar" -C runs/fmnist-$m model log.jsonl summary.json; done
  [ -d runs/checkerboard ] && tar -cf "$OUT/checkerboard.tar" -C runs checkerboard
  tar -cf "$OUT/logs.tar" runs/*.log bench/results docs/benchmarks.md runs/ddp*/log.jsonl 2>/dev/null
  ls -la "$OUT"
}
trap finish EXIT
c="--steps 200000 --max-seconds $T --batch-size 256 --lr 1e-3 --grad-clip 1 --ema 0.999 --no-progress --log-every 200"
CUDA_VISIBLE_DEVICES=0 python3 scripts/train_images.py --method lsd --backend fd --init-from $P/fmnist-lsd/model --out runs/fmnist-lsd $c > runs/lsd.log 2>&1 &
CUDA_VISIBLE_DEVICES=1 python3 scripts/train_images.py --method psd-m --init-from $P/fmnist-psd-m/model --out runs/fmnist-psd-m $c > runs/psd-m.log 2>&1 &
CUDA_VISIBLE_DEVICES=1 python3 scripts/train_images.py --method fm --init-from $P/fmnist-fm/model --out runs/fmnist-fm $c > runs/fm.log 2>&1 &
CUDA_VISIBLE_DEVICES=0 timeout 280 python3 bench/time_to_quality.py --device cuda --methods lsd --max-seconds 180 --save runs/checkerboard > runs/ttq.log 2>&1 &
wait
tail -n 2 runs/*.log
E="--n 2000 --classifier checkpoints/fid-classifier --table runs/image_results.md"
CUDA_VISIBLE_DEVICES=0 timeout 120 python3 scripts/eval_images.py runs/fmnist-lsd/model runs/fmnist-psd-m/model $E > runs/eval0.log 2>&1 &
CUDA_VISIBLE_DEVICES=1 timeout 120 python3 scripts/eval_images.py runs/fmnist-fm/model $E --table runs/image_results_fm.md > runs/eval1.log 2>&1 &
wait
tail -n 14 runs/eval0.log runs/eval1.log
d="--method lsd --backend fd --steps 40 --batch-size 128 --log-every 5 --no-progress --checkpoint-every 0"
CUDA_VISIBLE_DEVICES=0 timeout 60 python3 scripts/train_images.py $d --out runs/ddp1 > runs/ddp1.log 2>&1
timeout 60 torchrun --standalone --nproc_per_node=2 scripts/train_images.py $d --out runs/ddp2 > runs/ddp2.log 2>&1
for r in ddp1 ddp2; do echo $r; python3 -c "import json;L=[json.loads(l) for l in open('runs/$r/log.jsonl')];print([(e['step'],round(e['loss'],3),round(e['step_time'],4)) for e in L])"; done
