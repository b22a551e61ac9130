"""Completion backends: model servers reached over HTTP. `make_backend` picks one from its
spec; `probe` asks a server what it serves before anything is started against it.

A spec is a URL, prefixed with the engine that serves there where it is not TGI:
`http://tgi:80` (or `tgi+http://...`), `vllm+http://vllm:8000`, `sglang+http://sglang:30000`,
`openai+http://llama:8090` (llama.cpp, or any other OpenAI-compatible server)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .contract import ENGINES, GENERATION_TIMEOUT, BackendInfo, BackendUnavailable, CompletionBackend, Engine

if TYPE_CHECKING:
    import aiohttp

OPENAI_PREFIX = "openai+"


def split_spec(spec: str) -> tuple[Engine, str]:
    """A spec's engine and URL: `vllm+http://h:8000` -> ("vllm", "http://h:8000"); no known
    engine before a `+`: a TGI server at the whole spec."""
    engine, plus, url = spec.partition("+")
    if plus and engine in ENGINES and "://" in url:
        return engine, url
    return "tgi", spec


def engine_spec(engine: Engine, url: str) -> str:
    """The spec of `engine` serving at `url` (TGI's is the plain URL)."""
    return url if engine == "tgi" else f"{engine}+{url}"


def make_backend(spec: str, session: aiohttp.ClientSession, timeout: float = GENERATION_TIMEOUT) -> CompletionBackend:
    """The backend a spec names; `timeout`: seconds for one generation call."""
    # Imported here: the command line reaches `contract` through this package, and needs
    # no HTTP client until it talks to a server.
    from .openai import OpenAICompletionsBackend
    from .tgi import TGIBackend

    engine, url = split_spec(spec)
    if engine == "tgi":
        return TGIBackend(url, session, timeout=timeout)
    return OpenAICompletionsBackend(url, session, timeout=timeout, engine=engine)


async def probe(spec: str, timeout: float = 10.0) -> BackendInfo:
    """What the server at `spec` serves; BackendUnavailable with a message a person can act
    on when it cannot say (not listening, or not the kind of server the spec names)."""
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        try:
            return await make_backend(spec, session).describe()
        except BackendUnavailable as error:
            engine, url = split_spec(spec)
            if engine == "tgi" and "404" in str(error):
                raise BackendUnavailable(
                    f"{spec} is not a TGI server (GET /info: 404); for an OpenAI-compatible server write "
                    f"--endpoint vllm+{url} (vLLM), sglang+{url} (SGLang) or {OPENAI_PREFIX}{url} (llama.cpp, others)"
                ) from None
            if "Cannot connect" in str(error) or "Connect call failed" in str(error):
                raise BackendUnavailable(f"nothing answers at {spec} ({error})") from None
            raise
