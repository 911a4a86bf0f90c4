# Shared by the probe scripts beside this file (source it): one variant = one bench.time_to_quality
# run into $P/<name>, then bench.families --eval-only scores it (64,000 samples, noise seeds 0-2) and
# its folder comes back through $OUT as <name>.tgz, without the weights (the transfer limit is 16 MiB
# a file). Set P (the work folder under $OUT) and COMMON (the shared time_to_quality flags) first.
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
probe_run() {  # name method steps [more time_to_quality flags]
  local name=$1 method=$2 steps=$3
  shift 3
  mkdir -p "$P/$name"
  python -m bench.time_to_quality $COMMON --methods "$method" --steps "$steps" "$@" --target 0 \
    --save "$P/$name" --results "$P/$name/ttq" --docs "$P/$name/ttq.md" > "$P/$name/train.log" 2>&1
  python -m bench.families --eval-only --methods "$method" --save "$P/$name" --steps "$steps" \
    --results "$P/$name/res" --docs "$P/$name/doc.md" --log-dir "$P/$name/logs" > "$P/$name/eval.log" 2>&1
  echo "$name done $(date +%T)"
  sed -n '/checkerboard KL/,$p' "$P/$name/eval.log" | sed -n 4p
  tar czf "$OUT/$name.tgz" --exclude='*.safetensors' -C "$P" "$name"
}
