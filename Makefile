# The two commands a newcomer runs: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   ?= runs/demo

.PHONY: install demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch/torchvision are pinned in packages/stvr-model; pip takes them from the local wheel store.
install: $(BIN)/python
	$(BIN)/pip install --quiet -e packages/stvr-data -e packages/stvr-model -r requirements-dev.txt

demo: install
	bash scripts/demo.sh $(DEMO)

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check packages tests benchmarks

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(DEMO)
