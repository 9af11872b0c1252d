# posezoo: `make repro` runs the pipeline, `make test` runs the tests; both create .venv first.
# `make publish` pushes the reproduced zoo to the project's default DVC remote (see README).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: repro test benchmark publish fanout clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==24.3.1
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[test]'
	touch $(STAMP)

repro: $(STAMP)
	$(BIN)/dvc repro
	$(BIN)/dvc metrics show

publish: $(STAMP)
	$(BIN)/posezoo publish

# The pipeline on a Ray cluster (README, "Running on a cluster"): make fanout ADDRESS=head:6379
fanout: $(STAMP)
	$(BIN)/posezoo fanout $(if $(ADDRESS),--address $(ADDRESS))

test: $(STAMP)
	$(BIN)/python -m pytest -q

benchmark: $(STAMP)
	$(BIN)/python benchmarks/pipeline_overhead.py
	$(BIN)/python benchmarks/per_tensor_recovery.py

clean:
	rm -rf build metrics plots zoo calibration/default
