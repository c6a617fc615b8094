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


# (kind, options) of each picture; `plot.make` names its file as `llmhood plot` would.
PICTURES = [
    ("params", {}),
    ("params", {"synthetic_untied": True}),
    ("rope", {"position": 100}),
    ("attention", {"text": PROMPT, "layer": 13, "head": 8}),
    ("attention", {"text": PROMPT, "layer": 13}),
    ("attention", {"text": PROMPT, "layer": 1}),
    ("logit-lens", {"text": PROMPT}),
    ("residual", {"text": PROMPT}),
    ("kv-cache", {}),
]


def main() -> None:
    llm = llmhood.load("smollm2-135m", dtype="float32")
    for kind, options in PICTURES:
        picture, stem = plot.make(llm, kind, NAME, **options)
        print(picture.save(IMAGES / f"{stem}.png"))


if __name__ == "__main__":
    main()
