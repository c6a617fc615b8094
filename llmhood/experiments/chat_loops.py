"""How often does a chat reply loop? Sampling settings compared on a fixed set of prompts.

A small model decoding greedily takes the likeliest token every time, and the likeliest
continuation of a phrase it has just written is often the phrase again: "a being of the
land, a being of the land, ..." until the token limit. Sampling at a low temperature,
cutting the tail with top-p and penalising repeated tokens each break such cycles in a
different way; this experiment counts how well.

A reply *loops* when it runs to the token limit and some run of `NGRAM` tokens occurs in
it at least `REPEATS` times: it ended because it was cut, not because it had finished, and
it was repeating itself. Ordinary prose of 256 tokens almost never repeats a 6-token run
three times; a loop does it within a few lines.

    llmhood experiment chat-loops [--max-new-tokens 256] [--seeds 0,1,2] [--json]

The prompts are 30 everyday chat questions, 20 in English and 10 in Chinese; nine are
facts with an answer a reply can be checked for (`ANSWERS`), since a setting that loops
less by rambling more is no gain. Sampled settings run once per seed (each prompt has its
own random stream, llmhood.generate), so their shares are means over seeds; greedy runs
once. llmhood's chat defaults (llmhood.generate.chat_settings) are the setting that loops
least among those that get the facts right at least as often as greedy decoding.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from tqdm import tqdm

from llmhood.errors import LLMHoodError
from llmhood.generate import SamplingParams
from llmhood.llm import LLM

NGRAM = 6
REPEATS = 3

PROMPTS = (
    "What is 2+2?",
    "Who are you?",
    "Tell me a joke.",
    "What is the capital of France?",
    "How do I boil an egg?",
    "Write a haiku about the sea.",
    "Explain photosynthesis in simple words.",
    "What should I name my new puppy?",
    "Give me three tips for better sleep.",
    "What is the difference between weather and climate?",
    "Translate 'good morning' into Spanish.",
    "Why is the sky blue?",
    "Write a short poem about autumn.",
    "What is a prime number?",
    "How many legs does a spider have?",
    "Summarise the story of Romeo and Juliet.",
    "What is machine learning?",
    "Recommend a book for a long flight.",
    "How can I stay motivated when studying?",
    "What does a doctor do?",
    "你好，你是谁？",
    "中国的首都是哪里？",
    "请给我讲一个笑话。",
    "一年有几个季节？",
    "如何学好英语？",
    "请写一首关于月亮的短诗。",
    "什么是人工智能？",
    "为什么要多喝水？",
    "推荐一道简单的家常菜。",
    "太阳从哪边升起？",
)
# What a right answer to the factual prompts contains (any one, case-insensitive), in
# either language: looping less is no gain if the answers go wrong.
ANSWERS: dict[int, tuple[str, ...]] = {
    0: ("4", "four"),
    3: ("paris",),
    10: ("buenos días", "buenos dias"),
    11: ("scatter",),
    13: ("divisible", "divisor", "factor"),
    14: ("8", "eight"),
    21: ("北京", "beijing"),
    23: ("四", "4", "four"),
    29: ("东", "east"),
}

# Settings compared: greedy (what `llmhood chat` did before), each remedy alone, and
# combinations; t = temperature, p = top-p, rp = repetition penalty. Values are
# SamplingParams fields; the others keep their neutral defaults.
SETTINGS: dict[str, dict[str, float]] = {
    "greedy": {"temperature": 0.0},
    "greedy-rp1.1": {"temperature": 0.0, "repetition_penalty": 1.1},
    "t0.2-p0.9": {"temperature": 0.2, "top_p": 0.9},
    "t0.2-p0.9-rp1.1": {"temperature": 0.2, "top_p": 0.9, "repetition_penalty": 1.1},
    "t0.5-p0.9-rp1.1": {"temperature": 0.5, "top_p": 0.9, "repetition_penalty": 1.1},
    "t0.7-p0.9-rp1.1": {"temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.1},
}


def loops(token_ids: Sequence[int], ngram: int = NGRAM, repeats: int = REPEATS) -> bool:
    """Whether some run of `ngram` tokens occurs at least `repeats` times in `token_ids`."""
    runs = Counter(tuple(token_ids[i : i + ngram]) for i in range(len(token_ids) - ngram + 1))
    return any(count >= repeats for count in runs.values())


@dataclass
class Reply:
    setting: str
    seed: int
    prompt: int  # index into PROMPTS
    tokens: int
    hit_limit: bool
    looped: bool  # hit the limit while repeating a run of NGRAM tokens
    correct: bool | None  # for the prompts in ANSWERS: whether the reply has the answer
    text: str


def check(max_new_tokens: int, seeds: Sequence[int], settings: Sequence[str]) -> None:
    """The arguments, before any model is loaded."""
    if max_new_tokens < NGRAM * REPEATS:
        raise LLMHoodError(
            f"--max-new-tokens {max_new_tokens} is too short to see a loop: a reply needs at "
            f"least {NGRAM * REPEATS} tokens to repeat a {NGRAM}-token run {REPEATS} times."
        )
    if not seeds or any(seed < 0 for seed in seeds):
        raise LLMHoodError("--seeds must list one or more non-negative integers, e.g. 0,1,2.")
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        raise LLMHoodError(f"Unknown setting {unknown[0]!r}; choose from: {', '.join(SETTINGS)}.")


def run(
    llm: LLM,
    max_new_tokens: int = 256,
    seeds: Sequence[int] = (0, 1, 2),
    settings: Sequence[str] = tuple(SETTINGS),
    batch_size: int = 16,
    progress: bool = True,
) -> list[Reply]:
    """Every prompt's reply under every setting (sampled ones once per seed)."""
    check(max_new_tokens, seeds, settings)
    prompts = [llm.chat_prompt([{"role": "user", "content": p}]) for p in PROMPTS]
    jobs = [
        (name, seed)
        for name in settings
        for seed in (seeds if SamplingParams(**SETTINGS[name]).temperature > 0 else seeds[:1])
    ]
    replies = []
    for name, seed in tqdm(jobs, desc="chat-loops", disable=not progress):
        results = llm.generate(
            prompts, max_new_tokens=max_new_tokens, add_bos=False, seed=seed,
            batch_size=batch_size, **SETTINGS[name],
        )  # fmt: skip
        for i, result in enumerate(results):
            hit = result.finish_reason == "length"
            right = None
            if i in ANSWERS:
                right = any(a in result.text.lower() for a in ANSWERS[i])
            replies.append(
                Reply(name, seed, i, len(result.token_ids), hit,
                      hit and loops(result.token_ids), right, result.text)
            )  # fmt: skip
    return replies


def summary(replies: list[Reply]) -> list[dict]:
    """Per setting: the share of replies that looped and that hit the limit, and the mean
    reply length, each averaged over the seeds it ran with."""
    rows = []
    for name in dict.fromkeys(r.setting for r in replies):
        mine = [r for r in replies if r.setting == name]
        english = [r for r in mine if not _chinese(PROMPTS[r.prompt])]
        chinese = [r for r in mine if _chinese(PROMPTS[r.prompt])]
        rows.append({
            "setting": name,
            "runs": len({r.seed for r in mine}),
            "looped": _share(mine, "looped"),
            "looped_english": _share(english, "looped"),
            "looped_chinese": _share(chinese, "looped"),
            "hit_limit": _share(mine, "hit_limit"),
            "correct": _share([r for r in mine if r.correct is not None], "correct"),
            "mean_tokens": sum(r.tokens for r in mine) / len(mine),
        })  # fmt: skip
    return rows


def _share(replies: list[Reply], field: str) -> float:
    return sum(getattr(r, field) for r in replies) / len(replies) if replies else 0.0


def _chinese(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


def table(rows: list[dict], max_new_tokens: int) -> str:
    lines = [
        f"{len(PROMPTS)} chat prompts, up to {max_new_tokens} new tokens; looped = hit the limit "
        f"while repeating a {NGRAM}-token run {REPEATS}+ times",
        f"{'setting':<20}{'runs':>5}{'looped':>8}{'(en':>6}{'zh)':>6}{'hit limit':>11}"
        f"{'mean tokens':>13}{f'right ({len(ANSWERS)} facts)':>18}",
    ]
    for r in rows:
        lines.append(
            f"{r['setting']:<20}{r['runs']:>5}{r['looped']:>8.0%}{r['looped_english']:>6.0%}"
            f"{r['looped_chinese']:>6.0%}{r['hit_limit']:>11.0%}{r['mean_tokens']:>13.0f}"
            f"{r['correct']:>18.0%}"
        )
    return "\n".join(lines)
