# The two set-up commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: demo finetune-demo tool-adapter test test-avx2 lint venv clean bench bench-train bench-rag bench-agent test-milvus

venv: $(STAMP)

# bfcl-eval (BFCL's questions and checker, for tests/test_bfcl.py and bench-agent) goes in
# without its dependencies: API clients and an old numpy that its checker does not need.
$(STAMP): pyproject.toml requirements/constraints.txt requirements/assets.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c requirements/constraints.txt -e '.[test]'
	$(PIP) install -q --no-deps --require-hashes -r requirements/assets.txt
	$(PIP) install -q --no-deps bfcl-eval==2026.3.23
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/llmhood demo

# Teaches the model a new name with LoRA on the CPU (a few minutes on 2 cores): answers and
# perplexity before and after, the loss curve in runs/finetune-demo/loss.png.
finetune-demo: $(STAMP)
	$(VENV)/bin/llmhood demo finetune

# A LoRA adapter for tool calling, trained on synthetic rows of our own (llmhood.agent.data;
# never BFCL's): `llmhood agent run --adapter runs/tool-adapter` and `llmhood bench agent
# --adapter runs/tool-adapter` use it. Rows reach ~1,040 tokens, hence --seq-len 1152; they
# average 560, of which 50 are the reply that is trained. One row per step (--batch-size 1)
# gives the adapter more steps from few rows; 1,200 rows take about 30 minutes on 2 cores
# (AVX-512; 400 rows took 11), and TOOL_ROWS=... trains on more or fewer.
TOOL_ROWS ?= 1200
tool-adapter: $(STAMP)
	$(VENV)/bin/llmhood agent data --out runs/tool-calls.jsonl --rows $(TOOL_ROWS) --seed 0
	$(VENV)/bin/llmhood train --data runs/tool-calls.jsonl --format openai --method lora \
	  --seq-len 1152 --batch-size 1 --no-grad-checkpointing --out runs/tool-adapter

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

# Not part of `make test`: tool calling on the Berkeley Function Calling Leaderboard's non-live
# categories, scored by BFCL's own checker (about 20 minutes on 2 cores for all 1,240
# questions constrained, over an hour unconstrained; LIMIT=20 samples each category,
# ADAPTER=runs/tool-adapter runs the adapter). bfcl-eval comes with the venv (see above).
LIMIT ?=
ADAPTER ?=
bench-agent: $(STAMP)
	$(VENV)/bin/llmhood bench agent $(if $(LIMIT),--limit $(LIMIT)) \
	  $(if $(ADAPTER),--adapter $(ADAPTER)) --json out/bench-agent.json

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
