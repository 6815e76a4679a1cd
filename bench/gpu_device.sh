#!/usr/bin/env bash
# bench/gpu_train.py on a machine that has JAX (and PyTorch) but neither TensorFlow nor keras, such
# as the lent H200: installs keras from the wheels in .whl/ (bench/fetch_wheels.sh), makes edgellm
# importable from this checkout, and writes the log, gpu_train.json and the quality curve to $OUT.
#
#   bash bench/gpu_device.sh                 # everything (about 6 minutes on an H200)
#   bash bench/gpu_device.sh --smoke         # any gpu_train.py option passes through
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/bench-gpu-report}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "installing .whl/*.whl failed: run bench/fetch_wheels.sh first" >&2; exit 1; }
# edgellm as pyproject.toml maps it (edgellm.training <- training/, ...), without building it
rm -rf /tmp/edgellm-src && mkdir -p /tmp/edgellm-src && cp -r edgellm /tmp/edgellm-src/
for folder in training export models; do ln -s "$PWD/$folder" "/tmp/edgellm-src/edgellm/$folder"; done
export PYTHONPATH=/tmp/edgellm-src:/tmp/site PYTHONUNBUFFERED=1 KERAS_BACKEND=${KERAS_BACKEND:-jax} TF_CPP_MIN_LOG_LEVEL=2
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,driver_version --format=csv 2>&1 | tee "$OUT/environment.txt"
python3 bench/gpu_train.py --work /tmp/bench-gpu --report "$OUT" "$@" 2>&1 | tee "$OUT/gpu_train.log"
