#!/usr/bin/env bash
# The CUDA checks of the /rank pass, for a machine with an NVIDIA GPU (issue 11).
#
#   bench/gpu.sh                       # venv .venv-cuda, torch 2.13.0 from the cu126 index
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 bench/gpu.sh
#   PIP_FIND_LINKS=/wheels PIP_NO_INDEX=1 bench/gpu.sh   # offline: wheels downloaded beforehand
#
# 1. a virtual environment with the CUDA build of torch (same version as pyproject.toml pins)
#    and the project with its dev extras;
# 2. the device-aware tests again, on CUDA (SOLAR_TEST_DEVICE=cuda: the same tests that run
#    on CPU in `make test`: fused pass, staging, precision choice, optimised path = reference);
# 3. bench/micro/device.py: requests/s and p50/p99 vs batch size at M = 2,048 and 8,192, CPU and
#    CUDA in the same run, into section "device" of docs/BENCHMARKS.md (and printed).
#
# Bounded: each step has a timeout; nothing listens on a port. Exit status: the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv-cuda}
PYTHON=${PYTHON:-python3}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cu126}
TORCH_VERSION=$(sed -n 's/.*"torch==\([0-9.]*\)".*/\1/p' pyproject.toml)
SECONDS_PER_POINT=${SECONDS_PER_POINT:-3}

step() { printf '\n== %s\n' "$*"; }

step "environment $VENV (torch $TORCH_VERSION from $TORCH_INDEX_URL)"
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
timeout 900 "$VENV/bin/pip" install -q --upgrade pip
timeout 1800 "$VENV/bin/pip" install -q "torch==$TORCH_VERSION" --index-url "$TORCH_INDEX_URL"
timeout 900 "$VENV/bin/pip" install -q -e '.[dev]'
"$VENV/bin/python" - <<'EOF'
import torch
assert torch.cuda.is_available(), f"torch {torch.__version__} sees no CUDA device"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}")
EOF

step "device-aware tests on CUDA"
SOLAR_TEST_DEVICE=cuda timeout 1200 "$VENV/bin/pytest" -q -p no:cacheprovider \
    tests/model/test_serving.py tests/service/scoring

step "throughput and p99 vs batch size, CPU and CUDA"
timeout 1800 "$VENV/bin/python" -m bench.micro.device --devices cpu,cuda --ms 2048,8192 \
    --batches 1,2,4,8,16,32,64,128 --seconds "$SECONDS_PER_POINT"
