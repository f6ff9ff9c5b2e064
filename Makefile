# make demo: set up .venv (first time only) and run the main job on the synthetic benchmark.
# make test: set up .venv (first time only) and run the test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export WANDB_SILENT := true

.PHONY: demo test lint bench

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

DEMO_METHODS ?= base lmp

demo: $(STAMP)
	@for method in $(DEMO_METHODS); do \
		echo "== training $$method (experiments/synthetic/$$method.yaml)"; \
		$(PY) -m tailseg fit --config experiments/synthetic/$$method.yaml \
			--trainer.default_root_dir runs/demo/$$method --report_path runs/demo/$$method/report.json || exit 1; \
	done
	$(PY) -m tailseg compare $(foreach m,$(DEMO_METHODS),runs/demo/$(m)) --reference $(firstword $(DEMO_METHODS)) \
		--sort frequency --output runs/demo/comparison.md --figure runs/demo/gains.png
	@echo "Demo done: runs/demo/comparison.md, runs/demo/gains.png; notebooks: notebooks/01_per_class_gains.ipynb, notebooks/02_fairness.ipynb (TAILSEG_RUNS=runs/demo)"

test: $(STAMP)
	WANDB_MODE=disabled $(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/bench_training.py
	$(PY) benchmarks/bench_losses.py
	$(PY) benchmarks/bench_sampler.py
	$(PY) benchmarks/bench_data.py
	$(PY) benchmarks/bench_bootstrap.py
