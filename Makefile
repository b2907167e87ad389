# The README's two commands: `make demo` and `make test` (pytest, which also builds the docs with --strict).
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export NO_MKDOCS_2_WARNING := 1

.PHONY: setup demo test bench ablations exps docs clean gpu-wheels gpu-smoke

setup: $(STAMP)

# Re-installs only when pyproject.toml changes; torch==2.13.0 resolves to the local CPU wheel.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: setup
	PATH="$(BIN):$$PATH" dvc repro

test: setup
	PATH="$(BIN):$$PATH" $(PY) -m pytest -q

# Each row of ablations/demo.yaml as a DVC experiment (after `make demo`), then the report's table.
# `make ablations JOBS=2` runs two at a time from DVC's queue.
JOBS ?= 1
ablations: setup
	PATH="$(BIN):$$PATH" $(PY) -m bali.reporting.ablations run ablations/demo.yaml --jobs $(JOBS)
	PATH="$(BIN):$$PATH" $(PY) -m bali.reporting.ablations table ablations/demo.yaml
	PATH="$(BIN):$$PATH" dvc repro report

# The ablation experiments side by side (after `make ablations`): each task's gain over the base model
# (reports/summary.json), the experiment's name saying what changed; narrow enough for a terminal.
EXPS_KEEP := Experiment$$|demo_el_dev\.delta$$|demo_el_test\.(delta|p)$$|hierarchy_dev\.delta$$|hierarchy_held_out\.delta$$
# Of the commit the rows of ablations/demo.csv ran on (later commits that only touch docs keep them).
EXPS_REV ?= $(shell awk -F, 'NR == 2 {print $$2}' ablations/demo.csv)
exps: setup
	PATH="$(BIN):$$PATH" dvc exp show --rev $(EXPS_REV) --only-changed --no-pager --drop '.*' --keep '$(EXPS_KEEP)'

# The documentation site on http://127.0.0.1:8000 (`make test` builds it with --strict).
docs: setup
	PATH="$(BIN):$$PATH" mkdocs serve

bench: setup
	$(PY) bench/umls_graph.py

# The GPU smoke check on a bare GPU machine (Python 3.12 with a CUDA torch, transformers, torch-geometric,
# numpy, pandas, pyarrow, safetensors, tokenizers, pytest; no network), after `make demo` here:
# `make gpu-wheels` here fetches what such a machine lacks into gpu-wheels/ (git-ignored); copy the
# repository with data/ and gpu-wheels/ there and run `make gpu-smoke` (no registry, no `make setup`).
SMOKE_PY ?= python3
SMOKE_WHEELS ?= polars==2.1.0 polars-runtime-32==2.1.0

gpu-wheels:
	python3 -m pip download --quiet --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
		--no-deps -d gpu-wheels $(SMOKE_WHEELS)
	du -sh gpu-wheels

gpu-smoke:
	if [ -d gpu-wheels ]; then $(SMOKE_PY) -m pip install --quiet --no-index --find-links gpu-wheels $(SMOKE_WHEELS); fi
	PYTHONPATH="$(CURDIR)" $(SMOKE_PY) bench/gpu_smoke.py

# The published recipe (profiles/paper.yaml's pretrain) at batch 256 on the demo's data, on one GPU, for as
# many steps as fit in MINUTES of training, then base vs aligned on the demo's dev/test entity linking and
# hierarchy: reports/published_gpu.json (the same bare-machine setup as gpu-smoke; refuses without CUDA).
MINUTES ?= 6
.PHONY: gpu-published
gpu-published:
	if [ -d gpu-wheels ]; then $(SMOKE_PY) -m pip install --quiet --no-index --find-links gpu-wheels $(SMOKE_WHEELS); fi
	PYTHONPATH="$(CURDIR)" $(SMOKE_PY) bench/published_gpu.py --minutes $(MINUTES)

clean:
	rm -rf data dvclive .pytest_cache
