#!/usr/bin/env bash
# GPU session 8 (2 x H100, ~9 minutes).
#   GPU 0: the CUDA-graph tests (tests/test_graphs.py), then bench/step_cost.py on the MLP and the
#          UNet with the fused branches, the CUDA-graph and bf16 rows and the UNet batch scaling.
#   GPU 1: PSD-U on Fashion-MNIST from the flow-matching network for 360 s with the training step
#          replayed as a CUDA graph, then its FID table.
set -u
export PYTHONUNBUFFERED=1 FLOWMAPS_DATA="$PWD/.data/fashion-mnist" PYTHONPATH="$PWD"
mkdir -p runs
bash scripts/gpu_unpack_data.sh > /dev/null || exit 1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'register_generator_state', hasattr(torch.cuda.CUDAGraph, 'register_generator_state'))"
c="--steps 200000 --batch-size 256 --lr 1e-3 --grad-clip 1 --ema 0.999 --no-progress --log-every 200 --no-learned-weight"
(
  CUDA_VISIBLE_DEVICES=1 timeout 400 python3 scripts/train_images.py --method psd-u --out runs/fmnist-psd-u \
      --init-from checkpoints/fmnist-fm --max-seconds 360 --cuda-graph $c > runs/psd-u.log 2>&1
  CUDA_VISIBLE_DEVICES=1 timeout 100 python3 scripts/eval_images.py runs/fmnist-psd-u/model --n 2000 \
      --table runs/t_psdu.md > runs/eval_psdu.log 2>&1
  tar -cf "$OUT/psdu.tar" runs/fmnist-psd-u/model runs/fmnist-psd-u/log.jsonl runs/fmnist-psd-u/summary.json
) &
(
  if python3 -c "import pytest" 2>/dev/null; then
    CUDA_VISIBLE_DEVICES=0 timeout 120 python3 -m pytest tests/test_graphs.py -q -p no:cacheprovider > runs/test_graphs.log 2>&1
  else
    echo "no pytest on this machine" > runs/test_graphs.log
  fi
  CUDA_VISIBLE_DEVICES=0 timeout 380 python3 bench/step_cost.py --device cuda --unet-scaling 64 1024 --repeats 10 \
      --inner 2 --results runs/bench --docs runs/bench.md > runs/bench.log 2>&1
) &
wait
tail -n 15 runs/test_graphs.log
tail -n 3 runs/psd-u.log; grep "^| fmnist" runs/t_psdu.md
grep -E "unet|mlp" runs/bench.log | tail -n 60
tar -cf "$OUT/logs.tar" runs/*.log runs/*.md runs/bench
ls -la "$OUT"
