"""What a completion backend is: the one contract the gateway, the in-process runner and the
stand-in share. Nothing here knows HTTP, the cache or the message bus."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from ..core.chat import GenerationParameters

GENERATION_TIMEOUT = 300.0  # seconds for one generation call: long answers of a large model under load

# The model servers a backend speaks to, each in its own protocol: TGI's `/generate`; vLLM's
# and SGLang's `/v1/completions` with their own sampling extensions; any other
# OpenAI-compatible server (llama.cpp's names for the extensions).
Engine = Literal["tgi", "vllm", "sglang", "openai"]
ENGINES: tuple[Engine, ...] = ("tgi", "vllm", "sglang", "openai")


@dataclass(frozen=True, slots=True)
class Completion:
    """What a server generated for one rendered prompt."""

    text: str  # raw: stop sequence and surrounding white space not yet removed
    seconds: float = 0.0  # the server's own inference time; 0 where it does not say
    prompt_tokens: int | None = None  # as the server counted them; None where it does not say
    generated_tokens: int | None = None
    cached: bool = False  # answered from the generation cache, not by a server


class GenerationRejected(Exception):
    """The server rejected the request itself (e.g. HTTP 422): a result, not a retry."""

    def __init__(self, reason: str, cached: bool = False) -> None:
        super().__init__(reason)
        self.cached = cached  # the rejection was remembered by the cache


class BackendUnavailable(RuntimeError):
    """The server did not give an answer after every retry: try again later, record nothing."""


@dataclass(frozen=True, slots=True)
class BackendInfo:
    """What a server says of itself: the model it serves and how many requests it takes at once."""

    model_id: str
    max_concurrent: int | None = None


# Completes one fully rendered prompt.
Complete = Callable[[str, GenerationParameters], Awaitable[Completion]]


class CompletionBackend(Protocol):
    """A model server: says what it serves, completes prompts, counts its retries."""

    @property
    def url(self) -> str: ...

    @property
    def retries(self) -> int: ...

    async def describe(self) -> BackendInfo: ...

    async def complete(self, prompt: str, parameters: GenerationParameters) -> Completion: ...
