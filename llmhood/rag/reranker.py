"""An optional reranker: the chat model judges each retrieved passage, one forward pass each.

For every candidate the model reads the passage and the question and is asked whether the
passage answers it; the score is log P(yes) - log P(no) at the first token of its reply
(each summed over the spellings "yes"/"Yes"/" yes"...). A pointwise yes/no judgement needs
no training and no second model: it is the cross-encoder idea with the chat model as the
encoder. It costs one prefill per candidate, so it reranks a short list (top 20), and it is
off by default: `llmhood rag eval --rerank` measures whether it helps (README).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from llmhood.llm import LLM
    from llmhood.rag.knowledge_base import Hit

QUESTION = (
    "Passage:\n{passage}\n\nQuestion: {question}\n\n"
    "Does the passage answer the question? Reply with yes or no."
)
CANDIDATES = 20
MAX_PASSAGE_TOKENS = 400  # a chunk is at most the embedder's window; this bounds a prefill


def _token_ids(llm: LLM, words: tuple[str, ...]) -> list[int]:
    """The first token of each spelling: what the reply's first step would emit."""
    return sorted({llm.tokenizer.encode(w)[0] for w in words})


@torch.inference_mode()
def judge(llm: LLM, question: str, passage: str) -> float:
    """log P(yes) - log P(no) for the reply's first token."""
    pieces = llm.tokenizer.encode(passage)[:MAX_PASSAGE_TOKENS]
    text = QUESTION.format(passage=llm.tokenizer.decode(pieces), question=question)
    prompt = llm.chat_prompt([{"role": "user", "content": text}])
    ids = torch.tensor([llm.tokenizer.encode(prompt)])  # [1, T]
    logits = llm.model(ids, last_only=True)[0, -1].float()  # [vocab]
    logp = torch.log_softmax(logits, dim=-1)
    yes = torch.logsumexp(logp[_token_ids(llm, ("yes", "Yes", " yes", " Yes"))], dim=0)
    no = torch.logsumexp(logp[_token_ids(llm, ("no", "No", " no", " No"))], dim=0)
    return float(yes - no)


def rerank_hits(llm: LLM, question: str, hits: list[Hit]) -> list[Hit]:
    """The hits reordered by the model's judgement, its score in place of the retriever's."""
    judged = [hit._replace(score=judge(llm, question, hit.text)) for hit in hits]
    return sorted(judged, key=lambda hit: -hit.score)
