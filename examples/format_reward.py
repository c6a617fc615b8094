"""A rule-based reward for `llmhood train --stage grpo`: the right sum, in an exact format.

    llmhood train --stage grpo --data examples/arithmetic_prompts.jsonl \
        --reward examples/format_reward.py:answer_format --out runs/grpo

Each prompt asks for a sum and for the reply "Answer: N". A completion earns 0.5 when the
right sum appears in it at all, and 0.5 more when the reply is the line "Answer: N" and
nothing else. The partial credit matters for a small model: one that never writes the exact
format would get 0 for every completion of a group, and a group whose rewards are all equal
teaches GRPO nothing. A reward that checks a rule, not a model's opinion, cannot be gamed
by style: the kind of task GRPO was shown to learn (DeepSeekMath).
"""

from __future__ import annotations

import re

FORMAT = re.compile(r"^\s*Answer:\s*(-?\d+)\s*$")
QUESTION = re.compile(r"What is (-?\d+) \+ (-?\d+)\?")
NUMBER = re.compile(r"-?\d+")


def answer_format(prompts: list[str], completions: list[str]) -> list[float]:
    rewards = []
    for prompt, completion in zip(prompts, completions, strict=True):
        text = completion.replace("<|im_end|>", "")
        question = QUESTION.findall(prompt)
        answer = sum(map(int, question[-1])) if question else None
        said = [int(n) for n in NUMBER.findall(text)]
        exact = FORMAT.match(text)
        right = answer in said
        rewards.append(0.5 * right + 0.5 * (exact is not None and int(exact.group(1)) == answer))
    return rewards
