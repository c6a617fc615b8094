"""Tool-using agents, written here: tools from Python functions (`tools.py`, `schema.py`), the
formats models call them in (`formats.py`), one constrained turn (`call.py`), the loop
(`loop.py`), the built-in tools (`calculator.py`, `sandbox.py`, `files.py`, `kb_search.py`),
MCP servers (`mcp.py`) and the BFCL benchmark (`bfcl.py`, `bench.py`).

The agent uses generation (llmhood.generate, with its constrained decoder); generation knows
nothing of agents."""

from llmhood.agent.call import Turn, call_tools, decide
from llmhood.agent.formats import ToolCall
from llmhood.agent.loop import Agent, AgentResult, Step
from llmhood.agent.tools import Observation, Tool

__all__ = [
    "Agent",
    "AgentResult",
    "Observation",
    "Step",
    "Tool",
    "ToolCall",
    "Turn",
    "call_tools",
    "decide",
]
