"""A rule-based reward for `llmhood train --stage grpo`: answer in an exact format.

    llmhood train --stage grpo --data examples/arithmetic_prompts.jsonl \
        --reward examples/format_reward.py:answer_format --out runs/grpo

Each prompt asks for a sum and for the reply "Answer: N". A completion earns 0.5 for the
format alone (the line "Answer: <integer>" and nothing else) and 0.5 more when N is right.
A reward that checks a rule, not a model's opinion, cannot be gamed by style: this is the
kind of task GRPO was shown to learn (DeepSeekMath).
"""

from __future__ import annotations

import re

FORMAT = re.compile(r"^\s*Answer:\s*(-?\d+)\s*$")
QUESTION = re.compile(r"What is (-?\d+) \+ (-?\d+)\?")


def answer_format(prompts: list[str], completions: list[str]) -> list[float]:
    rewards = []
    for prompt, completion in zip(prompts, completions, strict=True):
        text = completion.replace("<|im_end|>", "")
        match = FORMAT.match(text)
        if match is None:
            rewards.append(0.0)
            continue
        question = QUESTION.findall(prompt)
        right = bool(question) and int(match.group(1)) == sum(map(int, question[-1]))
        rewards.append(0.5 + 0.5 * right)
    return rewards
