"""Text Generation Inference's native `/generate`, over one reused aiohttp session.

A request the server rejects for what it asks (422, or 400) is a result: it raises
`GenerationRejected`, which the task records as an error. Overload (429), server errors
(5xx), timeouts and dropped connections are never results: they are retried with
exponential backoff until the server answers or `max_attempts` is spent.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import aiohttp

from ..core.chat import GenerationParameters
from ..runner import GenerationRejected


class BackendUnavailable(RuntimeError):
    """The server did not give an answer after every retry."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 8
    first_delay: float = 0.05
    max_delay: float = 5.0

    def delay(self, attempt: int) -> float:
        return min(self.first_delay * 2**attempt, self.max_delay)


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


class TGIBackend:
    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        retry: RetryPolicy = RetryPolicy(),
        timeout: float = 600.0,
    ) -> None:
        self.url = base_url.rstrip("/") + "/generate"
        self.session = session
        self.retry = retry
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.retries = 0

    async def complete(self, prompt: str, parameters: GenerationParameters) -> tuple[str, float]:
        """(generated text, server inference seconds) for a rendered prompt."""
        payload = tgi_payload(prompt, parameters)
        last_problem = "no attempt made"
        for attempt in range(self.retry.max_attempts):
            if attempt:
                self.retries += 1
                await asyncio.sleep(self.retry.delay(attempt - 1))
            try:
                async with self.session.post(self.url, json=payload, timeout=self.timeout) as response:
                    if response.status == 200:
                        body = await response.json()
                        seconds = float(response.headers.get("x-inference-time", 0)) / 1000
                        return body["generated_text"], seconds
                    detail = await _error_text(response)
                    if response.status in (400, 422):
                        raise GenerationRejected(f"{response.status}: {detail}")
                    last_problem = f"HTTP {response.status}: {detail}"
            except (TimeoutError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as error:
                last_problem = f"{type(error).__name__}: {error}"
        raise BackendUnavailable(f"{self.url} gave no answer after {self.retry.max_attempts} attempts ({last_problem})")


async def _error_text(response: aiohttp.ClientResponse) -> str:
    try:
        body = await response.json(content_type=None)
        return str(body.get("error", body)) if isinstance(body, dict) else str(body)
    except (ValueError, aiohttp.ContentTypeError):
        return (await response.text())[:200]
