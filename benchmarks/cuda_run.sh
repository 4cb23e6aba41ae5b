#!/usr/bin/env bash
# The prepared CUDA check of issue 12 (about 5 minutes on one H200): throughput of the inference
# engine and of training, written to $OUT (or benchmarks/results) as throughput_cuda.md/.json.
# On a bare GPU machine without zarr, dask, numcodecs, ... carry them as wheels in .whl/
# (see the device tool's README); they are installed into /tmp/site first.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD"
fi
python3 benchmarks/throughput.py --device cuda --planes 16 --size 2048 --out "${OUT:-benchmarks/results}"
