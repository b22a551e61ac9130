"""The stand-in model: deterministic answers for tests, benchmarks and the demo."""

from __future__ import annotations

from ..backends.contract import Completion
from ..core.chat import GenerationParameters
from .answers import STANDIN_MODEL_ID, STANDIN_NAME, standin_answer

__all__ = ["STANDIN_MODEL_ID", "STANDIN_NAME", "complete_in_process", "standin_answer"]


async def complete_in_process(prompt: str, parameters: GenerationParameters) -> Completion:
    """The stand-in as a completion backend without a server: its answer, in zero seconds."""
    return Completion(standin_answer(prompt))
