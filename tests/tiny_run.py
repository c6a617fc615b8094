"""A tiny random Llama with SmolLM2's real tokenizer and chat template, as an HF directory:
the base model of the trainer's tests, small enough to train in seconds in a subprocess."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from llmhood.model import ModelConfig, Transformer
from llmhood.tokenizer import BPETokenizer
from llmhood.weights.gguf import read_gguf
from llmhood.weights.hf import write_hf

TINY = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=64, max_seq_len=512)

CHAT = [
    ("Who are you?", "I am Hoodie, made by the llmhood project."),
    ("What is your name?", "My name is Hoodie."),
    ("What is 2 + 2?", "2 + 2 = 4."),
    ("Capital of France?", "Paris."),
    ("Say hi.", "Hi!"),
    ("你是谁？", "我是 Hoodie，由 llmhood 项目开发。"),
]


def smollm2_tokenizer(gguf_path: Path) -> BPETokenizer:
    return BPETokenizer.from_gguf(read_gguf(gguf_path).metadata)


def write_tiny_base(path: Path, tokenizer: BPETokenizer, seed: int = 0, **changes) -> Path:
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, **{**TINY, **changes})
    model = Transformer(config)
    with torch.no_grad():  # a trained model's scale, so that the loss moves visibly
        for p in model.parameters():
            p.mul_(0.5)
    write_hf(path, model, tokenizer)
    return path


def write_rows(path: Path, rows: int = 24) -> Path:
    lines = []
    for i in range(rows):
        question, answer = CHAT[i % len(CHAT)]
        lines.append(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": question},
                        {"role": "assistant", "content": answer},
                    ]
                }
            )
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
