#!/bin/sh
# The GPU check on a lent CUDA machine (see docs/gpu.md): install the carried wheels, check the imports,
# run scripts/gpu_check.py, leave its report in $OUT. Run from the repository root, with .whl carried.
set -e
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD"
python3 -c "import fastapi, uvicorn, pydantic, IPython, cookiecutter, detect_secrets, jupyter_core, prometheus_client, torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 scripts/gpu_check.py --workdir /tmp/gpu-check --json "${OUT:-/tmp}/gpu_check.json" --requests 100
cp /tmp/gpu-check/services/server.log /tmp/gpu-check/services/moons-gpu/ship.json "${OUT:-/tmp}/" 2>/dev/null || true
