"""Any OpenAI-compatible completions server (vLLM, SGLang, llama.cpp): `POST /v1/completions`.

The gateway renders the chat template itself, so the plain completions endpoint (not chat
completions) keeps the prompt exactly the protocol's. Servers differ in which sampling
fields they accept; the common ones are sent, the rest (top_k, repetition_penalty) go as
the extensions vLLM and llama.cpp both understand.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from ..core.chat import GenerationParameters
from ..runtime.settings import redact_url
from .contract import GENERATION_TIMEOUT, BackendInfo, BackendUnavailable, Completion
from .http import DEFAULT_RETRY, JsonEndpoint, RetryPolicy, get_json


def openai_payload(model: str, prompt: str, parameters: GenerationParameters) -> dict[str, Any]:
    return {
        "model": model,
        "prompt": prompt,
        "max_tokens": parameters.max_new_tokens,
        "temperature": parameters.temperature,
        "top_p": parameters.top_p,
        "top_k": parameters.top_k,
        "repetition_penalty": parameters.repetition_penalty,  # vLLM, SGLang
        "repeat_penalty": parameters.repetition_penalty,  # llama.cpp
        "seed": parameters.seed,
        "stop": list(parameters.stop),
        "n": 1,
    }


class OpenAICompletionsBackend:
    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        retry: RetryPolicy = DEFAULT_RETRY,
        timeout: float = GENERATION_TIMEOUT,
        model: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        # The name in metric labels, logs and errors: a password in the URL is masked.
        self.url = redact_url(self.base_url)
        self.session = session
        self.model = model
        self.endpoint = JsonEndpoint(self.base_url + "/v1/completions", session, retry, timeout)

    @property
    def retries(self) -> int:
        return self.endpoint.retries

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
        body, _ = await self.endpoint.post(openai_payload(str(self.model), prompt, parameters))
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
