# The README's two commands: `make demo` and `make test` (pytest, which also builds the docs with --strict).
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export NO_MKDOCS_2_WARNING := 1

.PHONY: setup demo test bench ablations exps docs clean

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
ablations: setup
	PATH="$(BIN):$$PATH" $(PY) -m bali.ablations run ablations/demo.yaml
	PATH="$(BIN):$$PATH" $(PY) -m bali.ablations table ablations/demo.yaml
	PATH="$(BIN):$$PATH" dvc repro report

# The ablation experiments side by side (after `make ablations`): each task's gain over the base model
# (reports/summary.json), the experiment's name saying what changed; narrow enough for a terminal.
EXPS_KEEP := Experiment$$|demo_el_dev\.delta$$|demo_el_test\.(delta|p)$$|hierarchy_dev\.delta$$|hierarchy_held_out\.delta$$
exps: setup
	PATH="$(BIN):$$PATH" dvc exp show --only-changed --no-pager --drop '.*' --keep '$(EXPS_KEEP)'

# The documentation site on http://127.0.0.1:8000 (`make test` builds it with --strict).
docs: setup
	PATH="$(BIN):$$PATH" mkdocs serve

bench: setup
	$(PY) bench/umls_graph.py

clean:
	rm -rf data dvclive .pytest_cache
