# The two commands a newcomer runs: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   ?= runs/demo

.PHONY: packages install demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch/torchvision are pinned in packages/stvr-model; pip takes them from the local wheel store.
packages: $(BIN)/python
	$(BIN)/pip install --quiet -e packages/stvr-data -e packages/stvr-model

# The packages and what the tests and the linter need.
install: packages
	$(BIN)/pip install --quiet -r requirements-dev.txt

demo: packages
	bash scripts/demo.sh $(DEMO)

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check packages tests benchmarks

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(DEMO)
