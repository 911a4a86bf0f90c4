#!/usr/bin/env bash
# The recipe of the shipped Fashion-MNIST models (checkpoints/fmnist-*), stage by stage, with `flowmaps train`.
#
#   bash scripts/recipe_fmnist.sh fm|lsd|psd-m|psd-u|all [RUNS]
#
# Each stage is one `flowmaps train --init-from <previous stage>` run writing RUNS/<model>-<stage>
# (default RUNS=runs/fmnist); its card lists the stages behind it. The shipped stages were limited
# by wall time (--max-seconds) on the machines of docs/gpu_runs.md; here each stage runs the number
# of steps its shipped card records, so the chain is the same on any machine. Stages marked "2 GPUs"
# ran under torchrun with a global batch of 512; with GPUS=1 they run on one device at the same
# global batch (the same maths, slower). The FID tables come from bench/eval_images.py.
#
# Environment: GPUS (1 or 2, default 1), FLOWMAPS_DATA (the Fashion-MNIST files, if not installed),
# EXTRA (more flags for every stage; a dry run on a CPU:
# EXTRA="--device cpu --train-subset 256 --steps 2 --batch-size 4 --no-cuda-graph --no-compile").
set -euo pipefail
cd "$(dirname "$0")/.."
which="${1:-all}"
RUNS="${2:-runs/fmnist}"
GPUS="${GPUS:-1}"
mkdir -p "$RUNS"
# The shipped UNet (3.7M parameters: base 48, mults 1,2,2, 2 blocks per level; the later stages take
# it from their parent) and optimiser: RAdam lr 1e-3, clip 1, EMA 0.999, eta 0.75,
# no spike guard (with clipping at 1 a large gradient cannot make a large update), no bf16.
COMMON=(--data fashion-mnist --eta 0.75 --lr 1e-3
        --grad-clip 1 --ema-decay 0.999 --spike-factor 0 --no-amp --log-every 200 --checkpoint-every 2000
        --eval-n 0 --no-progress)

# stage OUT PARENT(or -) METHOD STEPS BATCH NGPU [flags...]
stage() {
    local out="$RUNS/$1" parent="$2" method="$3" steps="$4" batch="$5" ngpu="$6"
    shift 6
    local from=()
    [ "$parent" = "-" ] || from=(--init-from "$RUNS/$parent")
    if [ -f "$out/model.safetensors" ]; then echo "== $out exists: skipped"; return; fi
    echo "== $out: $steps steps of $method, batch $batch"
    local run=(python -m flowmaps)
    [ "$ngpu" = 2 ] && [ "$GPUS" = 2 ] && run=(torchrun --standalone --nproc_per_node=2 -m flowmaps)
    # shellcheck disable=SC2086  # EXTRA is a list of flags
    "${run[@]}" train "${COMMON[@]}" --method "$method" --steps "$steps" --batch-size "$batch" \
        --out "$out" "${from[@]}" "$@" ${EXTRA:-}
}

fm() {  # the flow-matching baseline, and the start of every distilled model
    stage fm - fm 7613 256 1 --channels 48 --channel-mults 1,2,2 --res-blocks 2 --learn-loss-weight \
        --note "Flow matching only (the diagonal v_{t,t}); sample it with an ODE solver."
}

lsd() {
    fm
    stage lsd-2 fm lsd 934 256 1 --no-learn-loss-weight --backend fd --fd-step 3e-4 --no-tf32 --ema-decay 0.995 \
        --note "LSD with d/dt X by central difference."
    stage lsd-3 lsd-2 lsd 2547 256 1 --no-learn-loss-weight --note "LSD with the UNet's tangent pass."
    stage lsd-4 lsd-3 lsd 6562 256 1 --no-learn-loss-weight --cuda-graph --note "The step replayed as a CUDA graph."
    stage lsd-5 lsd-4 lsd 5041 256 1 --no-learn-loss-weight --cuda-graph --compile \
        --note "The UNet compiled inside the CUDA graph."
    stage lsd-6 lsd-5 lsd 6536 512 2 --no-learn-loss-weight --cuda-graph --anneal-from 0.5 \
        --note "2 GPUs, global batch 512, the lr falling linearly to 0 over the second half."
    stage lsd-7 lsd-6 lsd 7593 512 2 --no-learn-loss-weight --cuda-graph --anneal-from 0.5 \
        --note "2 GPUs, the lr back at 1e-3 and falling linearly to 0 over the second half (the shipped fmnist-lsd)."
}

psd_m() {
    fm
    stage psd-m-2 fm psd-m 1303 256 1 --no-learn-loss-weight
    stage psd-m-3 psd-m-2 psd-m 3550 256 1 --no-learn-loss-weight
    stage psd-m-4 psd-m-3 psd-m 9957 256 1 --no-learn-loss-weight --cuda-graph
    stage psd-m-5 psd-m-4 psd-m 6154 512 2 --no-learn-loss-weight --cuda-graph --anneal-from 0.5 \
        --note "2 GPUs, global batch 512, the lr falling linearly to 0 over the second half (the shipped fmnist-psd-m)."
}

psd_u() {
    fm
    stage psd-u-2 fm psd-u 9198 256 1 --no-learn-loss-weight --cuda-graph --note "The shipped fmnist-psd-u."
}

case "$which" in
    fm) fm ;;
    lsd) lsd ;;
    psd-m) psd_m ;;
    psd-u) psd_u ;;
    all) lsd; psd_m; psd_u ;;
    *) echo "usage: $0 fm|lsd|psd-m|psd-u|all [RUNS]" >&2; exit 2 ;;
esac
