"""What every completion backend over HTTP shares: one POST with retries, and what a server says of itself.

A request the server rejects for what it asks (422, or 400) is a result: it raises
`GenerationRejected`, which the task records as an error. Overload (429), server errors
(5xx), timeouts and dropped connections are never results: they are retried with
exponential backoff until the server answers or `max_attempts` is spent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec

from ..runtime.settings import redact_url
from .contract import GENERATION_TIMEOUT, BackendUnavailable, GenerationRejected


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 8
    first_delay: float = 0.05
    max_delay: float = 5.0
    # A call that timed out held a server slot for the whole timeout: after this many, the
    # server is not answering this request, and the caller hands it back (it is tried
    # again later, perhaps elsewhere) instead of holding the slot for 8 more timeouts.
    max_timeouts: int = 2

    def delay(self, attempt: int) -> float:
        return min(self.first_delay * 2**attempt, self.max_delay)


DEFAULT_RETRY = RetryPolicy()


_JSON = {"Content-Type": "application/json"}
# Worth another attempt: the server may answer next time.
_PASSING = (TimeoutError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, msgspec.DecodeError)


class JsonEndpoint:
    """POST JSON to one URL over a shared session, retrying what is worth retrying."""

    def __init__(
        self,
        url: str,
        session: aiohttp.ClientSession,
        retry: RetryPolicy = DEFAULT_RETRY,
        timeout: float = GENERATION_TIMEOUT,
    ) -> None:
        self.url = url
        self.shown = redact_url(url)  # what errors say: a password in the URL is masked
        self.session = session
        self.retry = retry
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.retries = 0

    async def post(self, payload: Mapping[str, Any]) -> tuple[Any, Mapping[str, str]]:
        """(JSON body, headers) of the first successful answer."""
        body = msgspec.json.encode(payload)  # msgspec: the same JSON as json.dumps, several times faster
        last_problem = "no attempt made"
        timeouts = 0
        for attempt in range(self.retry.max_attempts):
            if attempt:
                self.retries += 1
                await asyncio.sleep(self.retry.delay(attempt - 1))
            try:
                async with self.session.post(self.url, data=body, headers=_JSON, timeout=self.timeout) as response:
                    if response.status == 200:
                        return msgspec.json.decode(await response.read()), response.headers
                    detail = await _error_text(response)
                    if response.status in (400, 422):
                        raise GenerationRejected(f"{response.status}: {detail}")
                    last_problem = f"HTTP {response.status}: {detail}"
            except TimeoutError:
                timeouts += 1
                last_problem = f"no answer in {self.timeout.total:g} s"
                if timeouts >= self.retry.max_timeouts:
                    raise BackendUnavailable(f"{self.shown}: {last_problem}, {timeouts} times") from None
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, msgspec.DecodeError) as error:
                last_problem = f"{type(error).__name__}: {error}"
        raise BackendUnavailable(
            f"{self.shown} gave no answer after {self.retry.max_attempts} attempts ({last_problem})"
        )


class HttpBackend:
    """What a completion backend over HTTP holds: its server's base URL, the name it goes by
    in metric labels, logs and errors (the URL with a password masked), the shared session,
    and the endpoint it posts generations to, whose retries it counts."""

    def __init__(
        self, base_url: str, generate_path: str, session: aiohttp.ClientSession, retry: RetryPolicy, timeout: float
    ) -> None:
        self.base_url = base_url
        self.url = redact_url(base_url)
        self.session = session
        self.endpoint = JsonEndpoint(base_url + generate_path, session, retry, timeout)

    @property
    def retries(self) -> int:
        return self.endpoint.retries


def header_int(headers: Mapping[str, str], name: str) -> int | None:
    """A whole-number response header, None where it is absent or malformed."""
    try:
        return int(headers[name])
    except (KeyError, ValueError):
        return None


async def get_json(session: aiohttp.ClientSession, url: str, timeout: float = 10.0) -> Any:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            response.raise_for_status()
            return await response.json(content_type=None)
    except (TimeoutError, aiohttp.ClientError, ValueError) as error:
        shown = redact_url(url)  # aiohttp's own message may hold the URL too
        raise BackendUnavailable(f"{shown}: {type(error).__name__}: {str(error).replace(url, shown)}") from None


async def _error_text(response: aiohttp.ClientResponse) -> str:
    try:
        body = await response.json(content_type=None)
        return str(body.get("error", body)) if isinstance(body, dict) else str(body)
    except (ValueError, aiohttp.ContentTypeError):
        return (await response.text())[:200]
