# make demo: set up .venv (first time only) and run the main job on the synthetic benchmark.
# make test: set up .venv (first time only) and run the test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export WANDB_SILENT := true

.PHONY: demo test lint bench clean-runs

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m tailseg fit --config experiments/synthetic/base.yaml \
		--trainer.default_root_dir runs/demo/base --report_path runs/demo/base/report.json

test: $(STAMP)
	WANDB_MODE=disabled $(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/bench_step.py
