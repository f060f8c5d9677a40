#!/usr/bin/env bash
# The GPU check on a machine with CUDA and python3 + torch but none of our other packages:
# install the wheels carried in .whl/ (hydra-core, omegaconf, antlr4), then run
# bench/gpu_check.py over the full grid. Usage: bash bench/gpu_check.sh [OUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
python3 -c "import torch, onnxruntime; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available(), 'ort', onnxruntime.__version__, onnxruntime.get_available_providers())"
PYTHONUNBUFFERED=1 python3 bench/gpu_check.py --out "${1:-${OUT:-/tmp}}"
