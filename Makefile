# Two commands a new user runs: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test verify lint typecheck bench bench-gpu clean setup

setup: $(STAMP)

# torch is pinned here (CPU wheel) *before* the project so that the project's own range
# (torch>=2.4) is already satisfied and pip never pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[torch,test,dev,demo,fast,lightning,transformers,loggers]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/inertia demo

verify: $(STAMP)
	$(BIN)/inertia verify

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --timeout=900

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy src

# Speed is measured, not tested (JSON on stdout and in runs/bench/; peers from `pip install .[bench]`):
# the tracker's per-step overhead on a CPU MLP (about 2 min), B1 ensemble throughput against the
# hand-written loop of each backend and dtype, diffrax and torchsde (3 fresh processes per variant:
# most of an hour on 2 cores; `--only` picks a subset), one long path against diffrax (~5 min),
# energy error per gradient against scipy and diffrax (~2 min), the scaling table (~3 min), and
# B1 on a GPU (skips without CUDA), energy restarts and FIRE against tuned baselines (~30 min),
# and the Lightning and Hugging Face callbacks with and without inertia (~5 min).
# The tracker on a GPU (issue 8): transformer and MLP, SGD and AdamW, about 6 minutes on an H100/H200
bench-gpu: $(STAMP)
	mkdir -p runs/bench
	for m in transformer mlp; do for o in sgd adamw; do \
	  $(BIN)/python benchmarks/tracker_overhead.py --device cuda --model $$m --optimizer $$o --blocks 12 \
	    --out runs/bench/tracker_overhead_cuda_$${m}_$${o}.json || exit 1; done; done
	for m in transformer mlp; do \
	  $(BIN)/python benchmarks/tracker_overhead.py --device cuda --model $$m --optimizer adamw --fused --blocks 12 \
	    --out runs/bench/tracker_overhead_cuda_$${m}_adamw_fused.json || exit 1; done

bench: $(STAMP)
	mkdir -p runs/bench
	$(BIN)/python benchmarks/tracker_overhead.py --out runs/bench/tracker_overhead.json
	$(BIN)/python benchmarks/curvature.py --out runs/bench/curvature.json
	$(BIN)/python benchmarks/ensemble_b1.py --out runs/bench/ensemble_b1.json
	$(BIN)/python benchmarks/single_path.py --out runs/bench/single_path.json
	$(BIN)/python benchmarks/accuracy.py --out runs/bench/accuracy.json --out-dir runs/bench --plot runs/bench/accuracy.png
	$(BIN)/python benchmarks/scaling.py --out runs/bench/scaling.json
	$(BIN)/python benchmarks/ensemble_gpu.py --out runs/bench/ensemble_gpu.json
	$(BIN)/python benchmarks/optimizers.py --out runs/bench/optimizers.json
	$(BIN)/python benchmarks/integration_overhead.py --out runs/bench/integration_overhead.json

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
