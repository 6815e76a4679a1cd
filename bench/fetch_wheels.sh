#!/usr/bin/env bash
# The wheels that bench/gpu_device.sh installs on a machine without keras (the lent H200: Python
# 3.12, x86-64, no registry): keras as pyproject.toml pins it, and the two of its needs that such
# a machine lacks (namex, optree). Run from any checkout; .whl/ must be ignored by git
# (`echo /.whl/ >> .git/info/exclude`), and travels with `carry: [".whl"]`.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl keras==3.15.1 namex==0.1.0 optree==0.20.0
ls -l .whl
