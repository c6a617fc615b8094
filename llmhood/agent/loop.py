"""The agent loop: the model calls tools, sees their results, and decides again until it answers.

Each step is one constrained model turn (llmhood.agent.call.decide): a list of calls, possibly
several at once, or the empty list, which means "I can answer now". Calls run in the order
given; a call to an unknown tool, invalid arguments, an exception or a timeout come back to the
model as an error result it can read, and the loop goes on. When the model stops calling (or
repeats a call it has already seen the result of, which a small model does instead of
stopping), it writes the answer as free text, with the tools' results in its context. After
`max_steps` steps the loop stops calling and answers with what it has; the result says so.

Memory. The conversation is held to a token budget: when the rendered prompt grows past
`memory_tokens`, the oldest steps are dropped (never the task), and a note in the conversation
says how many messages went, so neither the model nor the reader is misled.

Every step goes to the trace (JSONL: prompt size, raw output, parsed calls, validation, results,
seconds) and, as it happens, to the transcript callback (the CLI prints it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from llmhood.agent.call import Turn, decide
from llmhood.agent.formats import ToolCall, get_format
from llmhood.agent.toolbox import as_tools
from llmhood.agent.tools import Toolbox
from llmhood.errors import LLMHoodError

ANSWER_SYSTEM = (
    "Answer the user's question in a sentence or two. Results of tools called for you appear "
    "in <tool_response> blocks: use them, and do not call tools."
)


@dataclass
class ToolResult:
    call: ToolCall
    output: str
    ok: bool
    seconds: float


@dataclass
class Step:
    index: int
    turn: Turn
    results: list[ToolResult] = field(default_factory=list)


@dataclass
class AgentResult:
    text: str
    steps: list[Step]
    stopped: Literal["answer", "max_steps"]
    dropped_messages: int = 0  # how many messages the memory budget removed

    @property
    def calls(self) -> list[ToolCall]:
        return [r.call for step in self.steps for r in step.results]


class Agent:
    """A tool-using assistant over an `llmhood.LLM`.

    tools: Python functions, llmhood Tools, OpenAI tool dicts with no callable are refused
    (there is nothing to run); kb: a knowledge base path or KnowledgeBase, added as a search
    tool; constrained: force every call to name a real tool with schema-valid arguments.
    """

    def __init__(
        self,
        llm,
        tools: Sequence[Any] = (),
        *,
        kb: Any = None,
        constrained: bool = True,
        max_steps: int = 5,
        memory_tokens: int = 2048,
        max_answer_tokens: int = 256,
        tool_timeout: float = 30.0,
        format: str = "smollm2",
        system: str | None = None,
        trace: str | Path | None = None,
        transcript: Callable[[str], None] | None = None,
    ):
        if not (isinstance(max_steps, int) and max_steps >= 1):
            raise LLMHoodError(f"max_steps={max_steps!r} is invalid: give a whole number >= 1.")
        if not (isinstance(memory_tokens, int) and memory_tokens >= 256):
            raise LLMHoodError(
                f"memory_tokens={memory_tokens!r} is too small: the tools and the task alone "
                "need a few hundred tokens; give at least 256."
            )
        self.llm = llm
        self.tools: Toolbox = as_tools(tools, kb=kb)
        if not self.tools:
            raise LLMHoodError("An agent needs at least one tool: give tools= or kb=.")
        self.constrained = constrained
        self.max_steps = max_steps
        self.memory_tokens = memory_tokens
        self.max_answer_tokens = max_answer_tokens
        self.tool_timeout = tool_timeout
        self.format = get_format(format)
        self.system = system
        self.trace = Path(trace) if trace is not None else None
        self.transcript = transcript or (lambda line: None)
        self.history: list[dict[str, Any]] = []  # earlier exchanges, for `chat`

    def run(self, task: str) -> AgentResult:
        """Work on `task` from a fresh conversation."""
        self.history = []
        return self.chat(task)

    def chat(self, message: str) -> AgentResult:
        """One user message in a conversation that remembers earlier ones."""
        if not isinstance(message, str) or not message.strip():
            raise LLMHoodError("The task is empty: say what the agent should do.")
        messages = [*self.history, {"role": "user", "content": message}]
        self._dropped = 0
        first = len(self.history)  # the new task: never dropped
        steps: list[Step] = []
        seen: dict[str, str] = {}  # a call's canonical JSON -> its result
        dropped = 0
        stopped: Literal["answer", "max_steps"] = "max_steps"
        for index in range(1, self.max_steps + 1):
            messages, first, gone = self._fit(messages, first)
            dropped += gone
            turn = decide(self.llm, self._with_system(messages), self.tools,
                          constrained=self.constrained, fmt=self.format)  # fmt: skip
            step = Step(index, turn)
            steps.append(step)
            calls = turn.calls or []
            fresh = [c for c in calls if _key(c) not in seen]
            if not fresh:  # no call, prose, or only calls already answered: time to answer
                self._log(step, note="answer")
                stopped = "answer"
                break
            messages.append({"role": "assistant", "content": "", "tool_calls": calls})
            for call in calls:
                result = self._execute(call)
                seen[_key(call)] = result.output
                step.results.append(result)
                messages.append({"role": "tool", "tool_call_id": call.id, "content": result.output})
            self._log(step)
        text = self._answer(messages, steps)
        if stopped == "max_steps":
            self.transcript(f"stopped: max_steps={self.max_steps} reached before an answer")
        self.history = [*messages, {"role": "assistant", "content": text}]
        self._write({"answer": text, "stopped": stopped, "steps": len(steps)})
        return AgentResult(text, steps, stopped, dropped)

    def _with_system(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"role": "system", "content": self.system}, *messages] if self.system else messages

    def _execute(self, call: ToolCall) -> ToolResult:
        started = time.perf_counter()
        observation = self.tools.run(call.name, call.arguments, timeout=self.tool_timeout)
        return ToolResult(call, observation.content, observation.ok, time.perf_counter() - started)

    def _answer(self, messages: list[dict[str, Any]], steps: list[Step]) -> str:
        """The final reply as free text, with the tools' results in the conversation."""
        last = steps[-1].turn if steps else None
        if last is not None and last.calls is None and not self.constrained:
            return last.raw.strip()  # unconstrained, the model answered in prose already
        conversation = self.format.messages(
            [{"role": "system", "content": ANSWER_SYSTEM}, *messages], tools=()
        )
        text = self.llm.chat(conversation, max_new_tokens=self.max_answer_tokens,
                             temperature=0.0)  # fmt: skip
        self.transcript(f"answer: {text.strip()}")
        return text.strip()

    def _fit(
        self, messages: list[dict[str, Any]], first: int
    ) -> tuple[list[dict[str, Any]], int, int]:
        """Drop the oldest messages until the prompt fits `memory_tokens`, never the task
        (`messages[first]`); a note in the conversation says how many went."""
        dropped = 0
        while self._tokens(messages) > self.memory_tokens:
            oldest = next((i for i, m in enumerate(messages) if i != first and "note" not in m),
                          None)  # fmt: skip
            if oldest is None or oldest == len(messages) - 1:
                break  # only the task and the newest result are left: nothing more to drop
            messages = messages[:oldest] + messages[oldest + 1 :]
            first -= oldest < first
            dropped += 1
        if dropped:
            self._dropped += dropped
            note = (f"[{self._dropped} earlier message(s) were dropped to keep the conversation "
                    f"within {self.memory_tokens} tokens.]")  # fmt: skip
            kept = [m for m in messages if "note" not in m]
            first -= sum("note" in m for m in messages[:first])
            messages = [{"role": "system", "content": note, "note": True}, *kept]
            first += 1
            self.transcript(note)
        return messages, first, dropped

    def _tokens(self, messages: list[dict[str, Any]]) -> int:
        prompt = self.llm.chat_prompt(self.format.messages(self._with_system(messages), self.tools))
        return len(self.llm.tokenizer.encode(prompt))

    def _log(self, step: Step, note: str = "") -> None:
        turn = step.turn
        for r in step.results:
            mark = "" if r.ok else " (error)"
            self.transcript(f"step {step.index}: {r.call.name}({json.dumps(r.call.arguments)})"
                            f" -> {r.output[:200]}{mark}")  # fmt: skip
        if note == "answer" and not step.results:
            self.transcript(f"step {step.index}: no tool call")
        self._write(
            {
                "step": step.index,
                "prompt_tokens": turn.prompt_tokens,
                "raw": turn.raw,
                "calls": [{"name": c.name, "arguments": c.arguments} for c in turn.calls or []],
                "parsed": turn.calls is not None,
                "errors": turn.errors,
                "results": [
                    {"name": r.call.name, "output": r.output, "ok": r.ok, "seconds": r.seconds}
                    for r in step.results
                ],
                "seconds": turn.seconds + sum(r.seconds for r in step.results),
            }
        )

    def _write(self, record: dict[str, Any]) -> None:
        if self.trace is None:
            return
        with self.trace.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def _key(call: ToolCall) -> str:
    return json.dumps({"name": call.name, "arguments": call.arguments}, sort_keys=True)
