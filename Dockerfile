# syntax=docker/dockerfile:1
# solar: the ranking service image.
#
#   docker build -t solar .                         # CPU torch (default)
#   docker build -t solar:cuda \
#     --build-arg BASE_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 .
#   docker build -t solar:baked --target baked .    # bakes artifacts/default-model in
#
# By default the model is mounted at /models/default (see docker-compose.yml); build with
# `--target baked` after `make model` to ship it inside the image instead.

ARG BASE_IMAGE=python:3.11-slim

# ---- build: a self-contained virtual environment in /opt/venv -------------------------------
FROM ${BASE_IMAGE} AS build
# The CPU wheel index keeps the image ~1 GB smaller than PyPI's CUDA build of torch; the
# version itself (torch==2.13.0) is pinned by pyproject.toml.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive
# CUDA base images have no Python: install the distribution's one (python:* images skip it).
# g++ builds the serving pass's native module (model.native) here; the runtime stage gets the
# built module only. Each is installed only where missing.
RUN missing=""; \
    command -v python3 >/dev/null 2>&1 || missing="python3 python3-venv python3-dev"; \
    command -v g++ >/dev/null 2>&1 || missing="$missing g++"; \
    if [ -n "$missing" ]; then \
        apt-get update && apt-get install -y --no-install-recommends $missing \
        && rm -rf /var/lib/apt/lists/*; \
    fi
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY model ./model
COPY service ./service
COPY solar_tools ./solar_tools
COPY bench ./bench
# The import check runs from / : in /src, `import service` would find the copied sources,
# not the installed package the runtime stage ships. The last line compiles the numba kernels
# (the state updates', the candidate scan's) into NUMBA_CACHE_DIR, for a generic x86-64 (the
# cache is keyed on the CPU: built for the build host's, every other host would compile again
# at start, ~11 s), and builds the serving pass's native module into SOLAR_NATIVE_CACHE.
ENV NUMBA_CACHE_DIR=/opt/numba-cache NUMBA_CPU_NAME=generic SOLAR_NATIVE_CACHE=/opt/solar-native
RUN pip install --upgrade pip \
    && pip install --extra-index-url "${TORCH_INDEX_URL}" . \
    && cd / && python -c "import torch, service.cli, bench.micro.kernels, solar_tools.replay; print('torch', torch.__version__)" \
    && python -c "from service.core.serving_model import warm_up_kernels; warm_up_kernels()"

# ---- runtime: the venv, a non-root user, nothing else ---------------------------------------
FROM ${BASE_IMAGE} AS runtime
ENV DEBIAN_FRONTEND=noninteractive
RUN if ! command -v python3 >/dev/null 2>&1; then \
        apt-get update && apt-get install -y --no-install-recommends python3 \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && groupadd --system --gid 10001 solar \
    && useradd --system --uid 10001 --gid solar --home-dir /home/solar --create-home solar \
    && mkdir -p /models && chown solar:solar /models
COPY --from=build /opt/venv /opt/venv
# numba only uses a cache directory it can write to: the runtime user owns it. With a
# read-only root filesystem, mount a writable volume there.
COPY --from=build --chown=solar:solar /opt/numba-cache /opt/numba-cache
# The serving pass's native module, built in the build stage for this venv's torch and Python
# (model.native): the runtime needs no compiler.
COPY --from=build /opt/solar-native /opt/solar-native
# OPENBLAS_NUM_THREADS=1: factor updates are many tiny SVDs, which a multi-threaded
# OpenBLAS makes far slower on a busy machine; torch keeps its own intra-op threads.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    OPENBLAS_NUM_THREADS=1 \
    NUMBA_CACHE_DIR=/opt/numba-cache \
    NUMBA_CPU_NAME=generic \
    SOLAR_NATIVE_CACHE=/opt/solar-native \
    SOLAR_HOST=0.0.0.0 \
    SOLAR_PORT=8000 \
    SOLAR_MODEL_PATH=/models/default \
    SOLAR_DEVICE=auto
USER solar
WORKDIR /home/solar
EXPOSE 8000
# /healthz only says the process is alive; orchestration should gate traffic on /readyz.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SOLAR_PORT', '8000'), timeout=2).status == 200 else 1)"]
CMD ["sh", "-c", "exec solar serve --host \"$SOLAR_HOST\" --port \"$SOLAR_PORT\""]

# ---- baked: the same image with the default model inside (docker build --target baked) ------
FROM runtime AS baked
COPY --chown=solar:solar artifacts/default-model /models/default

# ---- default target: the runtime image, model mounted at /models/default --------------------
FROM runtime AS serve
