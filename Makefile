# Two commands do all the set-up on a fresh machine (Python 3.11 + pip): `make demo`, `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test bench vectors clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0   # the local CPU wheel; users bring their own torch
	$(BIN)/python -m pip install -q -e ".[test,hub]"
	touch $@

demo: install
	$(BIN)/python docs/examples/demo.py demo-out

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/run.py
	$(BIN)/python bench/repo_remote.py

vectors: install
	$(BIN)/python format_spec/vectors/generate.py

clean:
	rm -rf $(VENV) demo-out bench/_data .pytest_cache .hypothesis
