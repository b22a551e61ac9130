"""Completion backends: model servers reached over HTTP. `make_backend` picks one from its
spec; `probe` asks a server what it serves before anything is started against it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .contract import GENERATION_TIMEOUT, BackendInfo, BackendUnavailable, CompletionBackend

if TYPE_CHECKING:
    import aiohttp

OPENAI_PREFIX = "openai+"


def make_backend(spec: str, session: aiohttp.ClientSession, timeout: float = GENERATION_TIMEOUT) -> CompletionBackend:
    """`http://host:port` is a TGI server; `openai+http://host:port` an OpenAI-compatible one;
    `timeout`: seconds for one generation call."""
    # Imported here: the command line reaches `contract` through this package, and needs
    # no HTTP client until it talks to a server.
    from .openai import OpenAICompletionsBackend
    from .tgi import TGIBackend

    if spec.startswith(OPENAI_PREFIX):
        return OpenAICompletionsBackend(spec.removeprefix(OPENAI_PREFIX), session, timeout=timeout)
    return TGIBackend(spec, session, timeout=timeout)


async def probe(spec: str, timeout: float = 10.0) -> BackendInfo:
    """What the server at `spec` serves; BackendUnavailable with a message a person can act
    on when it cannot say (not listening, or not the kind of server the spec names)."""
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        try:
            return await make_backend(spec, session).describe()
        except BackendUnavailable as error:
            if not spec.startswith(OPENAI_PREFIX) and "404" in str(error):
                raise BackendUnavailable(
                    f"{spec} is not a TGI server (GET /info: 404); for an OpenAI-compatible server "
                    f"(vLLM, SGLang, llama.cpp) write --endpoint {OPENAI_PREFIX}{spec}"
                ) from None
            if "Cannot connect" in str(error) or "Connect call failed" in str(error):
                raise BackendUnavailable(f"nothing answers at {spec} ({error})") from None
            raise
