# The README's two commands: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test bench ablations clean

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

bench: setup
	$(PY) bench/umls_graph.py

clean:
	rm -rf data dvclive .pytest_cache
