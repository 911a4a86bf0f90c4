#!/usr/bin/env bash
# The working tree that travels to the GPU machine is capped at 64 MiB, so the Fashion-MNIST
# training images travel xz-compressed in .data/xz (22.6 MB instead of 26.4 MB of gzip) with the
# labels; this restores the standard IDX .gz files in .data/fashion-mnist for the loader.
# Made here with: zcat train-images-idx3-ubyte.gz | xz -9e > .data/xz/train-images-idx3-ubyte.xz
set -eu
mkdir -p .data/fashion-mnist
[ -f .data/fashion-mnist/train-images-idx3-ubyte.gz ] || python3 - <<'PY'
import gzip, lzma, shutil
src, dst = ".data/xz/train-images-idx3-ubyte.xz", ".data/fashion-mnist/train-images-idx3-ubyte.gz"
with lzma.open(src) as f, gzip.open(dst, "wb", compresslevel=1) as g:
    shutil.copyfileobj(f, g)
PY
cp -n .data/xz/train-labels-idx1-ubyte.gz .data/fashion-mnist/ 2>/dev/null || true
ls -la .data/fashion-mnist
