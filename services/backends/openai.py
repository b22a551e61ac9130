"""OpenAI-compatible completions servers (vLLM, SGLang, llama.cpp): `POST /v1/completions`.

The gateway renders the chat template itself, so the plain completions endpoint (not chat
completions) keeps the prompt exactly the protocol's. OpenAI's own fields carry the paper's
seed, temperature, top_p, max tokens and stop sequences; top-k and the repetition penalty
are each server's extensions, sent under the names that server reads (`openai_payload`):
vLLM's and SGLang's extra sampling parameters (`top_k`, `repetition_penalty`), or
llama.cpp's (`top_k`, `repeat_penalty`) for any other server. A field a server does not know
is ignored by these servers, so the wrong name would silently sample without the penalty.
"""

from __future__ import annotations

from typing import Any, Literal

import aiohttp

from ..core.chat import GenerationParameters
from .contract import GENERATION_TIMEOUT, BackendInfo, BackendUnavailable, Completion
from .http import DEFAULT_RETRY, HttpBackend, RetryPolicy, get_json

OpenAIEngine = Literal["vllm", "sglang", "openai"]


def openai_payload(
    model: str, prompt: str, parameters: GenerationParameters, engine: OpenAIEngine = "openai"
) -> dict[str, Any]:
    """The `/v1/completions` body for the paper's sampling, as `engine` reads it."""
    body: dict[str, Any] = {
        "model": model,
        "prompt": prompt,
        "max_tokens": parameters.max_new_tokens,
        "temperature": parameters.temperature,
        "top_p": parameters.top_p,
        "seed": parameters.seed,
        "stop": list(parameters.stop),
        "n": 1,
        "top_k": parameters.top_k,
    }
    if engine in ("vllm", "sglang"):  # their completions request's extra sampling parameters
        body["repetition_penalty"] = parameters.repetition_penalty
    else:  # llama.cpp's server (and llama-cpp-python's)
        body["repeat_penalty"] = parameters.repetition_penalty
    return body


class OpenAICompletionsBackend(HttpBackend):
    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        retry: RetryPolicy = DEFAULT_RETRY,
        timeout: float = GENERATION_TIMEOUT,
        model: str | None = None,
        engine: OpenAIEngine = "openai",
    ) -> None:
        super().__init__(base_url.rstrip("/").removesuffix("/v1"), "/v1/completions", session, retry, timeout)
        self.engine = engine
        self.model = model

    async def describe(self) -> BackendInfo:
        """The served model from `/v1/models`; these servers do not say their concurrency."""
        if self.model is None:
            listing = await get_json(self.session, self.base_url + "/v1/models")
            models = listing.get("data") or [{}]
            self.model = str(models[0].get("id", "unknown"))
        return BackendInfo(self.model)

    async def complete(self, prompt: str, parameters: GenerationParameters) -> Completion:
        if self.model is None:
            await self.describe()
        body, _ = await self.endpoint.post(openai_payload(str(self.model), prompt, parameters, self.engine))
        text = _choice_text(body)
        if text is None:  # never cached: the request is tried again later
            raise BackendUnavailable(f"{self.url}: an answer without choices[0].text: {str(body)[:200]}")
        usage = body.get("usage") or {}
        return Completion(text, 0.0, _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens")))


def _choice_text(body: Any) -> str | None:
    try:
        text = body["choices"][0]["text"]
    except (KeyError, IndexError, TypeError):
        return None
    return text if isinstance(text, str) else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) else None
