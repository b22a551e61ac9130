"""Text Generation Inference's native `/generate`, over one reused aiohttp session."""

from __future__ import annotations

from typing import Any

import aiohttp

from ..core.chat import GenerationParameters
from .contract import GENERATION_TIMEOUT, BackendInfo, BackendUnavailable, Completion
from .http import DEFAULT_RETRY, HttpBackend, RetryPolicy, get_json, header_int

__all__ = ["BackendUnavailable", "RetryPolicy", "TGIBackend", "tgi_payload"]


def tgi_payload(prompt: str, parameters: GenerationParameters) -> dict[str, Any]:
    """The `/generate` body for the paper's settings: full text off, one sample, details on."""
    return {
        "inputs": prompt,
        "parameters": {
            **parameters.to_dict(),
            "do_sample": True,
            "best_of": 1,
            "return_full_text": False,
            "details": True,
        },
    }


class TGIBackend(HttpBackend):
    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        retry: RetryPolicy = DEFAULT_RETRY,
        timeout: float = GENERATION_TIMEOUT,
    ) -> None:
        super().__init__(base_url.rstrip("/"), "/generate", session, retry, timeout)

    async def describe(self) -> BackendInfo:
        """TGI's `/info`: the model id and `max_concurrent_requests`."""
        info = await get_json(self.session, self.base_url + "/info")
        limit = info.get("max_concurrent_requests")
        return BackendInfo(str(info.get("model_id", "unknown")), limit if isinstance(limit, int) else None)

    async def complete(self, prompt: str, parameters: GenerationParameters) -> Completion:
        """The generated text, with the inference time and token counts TGI puts in its headers."""
        body, headers = await self.endpoint.post(tgi_payload(prompt, parameters))
        text = body.get("generated_text") if isinstance(body, dict) else None
        if not isinstance(text, str):  # never cached: the request is tried again later
            raise BackendUnavailable(f"{self.url}: an answer without generated_text: {str(body)[:200]}")
        return Completion(
            text,
            (header_int(headers, "x-inference-time") or 0) / 1000,
            header_int(headers, "x-prompt-tokens"),
            header_int(headers, "x-generated-tokens"),
        )
