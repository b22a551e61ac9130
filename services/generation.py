"""What happens to a generation, wherever it is asked for: the one path from a task's
question to the answer the task reads.

1. Render the model's chat template around the question, with the system message.
2. Complete the prompt. `complete` is a backend, the backend pool, or either behind the
   generation cache (`gateway.cache.CachedCompletions`), which answers what it has seen
   and stores what a server says, rejections included.
3. Clean the answer: one trailing stop sequence and surrounding white space removed.

A generation's `duration` is the inference time the server spent on it for this run: the
seconds it reported when it computed the answer, and 0 for an answer the cache gave
(`cached`), which cost no server anything. A record's duration, and the result's
`durations.eval`, sum these, so a re-run from the cache says 0 and a cold run what it took.

A request the server rejects is a result (a `Generation` with its error); a backend that
stays unavailable raises `BackendUnavailable`, and no result is recorded. The in-process
runner and the gateway both generate through `ChatModel.generate`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from .backends.contract import Complete, GenerationRejected
from .core.chat import ChatFormat, ChatTurn, GenerationParameters, SystemMessage, clean_answer
from .core.replay import Generation


@dataclass(frozen=True, slots=True)
class ChatModel:
    """A chat format, system message and sampling settings in front of a completion function."""

    chat_format: ChatFormat
    system: SystemMessage
    parameters: GenerationParameters
    complete: Complete

    def render(self, message: str) -> str:
        """The prompt for one user message; raises SystemMessageNotSupported or a template error."""
        return self.chat_format.render([ChatTurn(message)], self.system)

    async def generate(self, message: str) -> Generation:
        if self.chat_format.from_model:
            # A model's own template renders in a thread, within its limits (core.chat): a
            # slow one must not stop the event loop, its other requests and /metrics with it.
            prompt = await asyncio.to_thread(self.render, message)
        else:
            prompt = self.render(message)
        try:
            completion = await self.complete(prompt, self.parameters)
        except GenerationRejected as rejected:
            return Generation("", error=str(rejected), cached=rejected.cached)
        text = clean_answer(completion.text, self.parameters.stop)
        # The cache keeps the seconds the first run was told; a hit cost this run nothing.
        duration = 0.0 if completion.cached else completion.seconds
        return Generation(text, duration=duration, cached=completion.cached)
