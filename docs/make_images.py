"""Regenerate every picture in docs/images/ from the real SmolLM2-135M-Instruct.

    .venv/bin/python docs/make_images.py

docs/inside.md describes what these pictures show; after changing a plot, run this and
read the pictures again before committing them. The same pictures come one at a time
from `llmhood plot <kind>`.
"""

from __future__ import annotations

from pathlib import Path

import llmhood
from llmhood import plot

IMAGES = Path(__file__).parent / "images"
NAME = "SmolLM2-135M-Instruct"
PROMPT = "The boy didn't cross the street because he was too "


def main() -> None:
    llm = llmhood.load("smollm2-135m", dtype="float32")
    size = llm.dtype.itemsize
    pictures = {
        "params": plot.plot_params(llm.model, f"{NAME} (real weights)"),
        "params-untied": plot.plot_params(
            plot.synthetic_untied(llm.config),
            f"Synthetic untied Llama of {NAME}'s shape (meta device: shapes, no values)",
        ),
        "rope": plot.plot_rope(llm.config, position=100),
        "attention-layer13-head8": plot.plot_attention(llm, PROMPT, layer=13, head=8),
        "attention-layer13": plot.plot_attention(llm, PROMPT, layer=13),
        "attention-layer1": plot.plot_attention(llm, PROMPT, layer=1),
        "logit-lens": plot.plot_logit_lens(llm, PROMPT),
        "residual": plot.plot_residual_norms(llm, PROMPT),
        "kv-cache": plot.plot_kv_cache(
            llm.config, size, weight_bytes=llm.model.num_parameters() * size, name=NAME
        ),
    }
    for name, picture in pictures.items():
        print(picture.save(IMAGES / f"{name}.png"))


if __name__ == "__main__":
    main()
