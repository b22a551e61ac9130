"""Each engine's protocol, as the stand-in's routes receive it: TGI's `/generate`, and the
`/v1/completions` bodies of vLLM, SGLang and llama.cpp (any other OpenAI-compatible server),
each carrying the paper's sampling under the names that server reads."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from services.backends import engine_spec, make_backend, probe, split_spec
from services.backends.contract import BackendUnavailable
from services.backends.openai import OpenAICompletionsBackend
from services.backends.tgi import TGIBackend
from services.core.chat import LLAMA2, ChatTurn, GenerationParameters, generation_defaults
from services.standin import standin_answer
from services.standin.server import STANDIN_MODEL_ID, create_app

PROMPT = LLAMA2.render([ChatTurn("What is the sentiment? Paragraph: A warm, funny film.")])
# The paper's sampling for a Llama 2 job of seed 7: every field differs from each server's default.
PAPER = generation_defaults(LLAMA2, seed=7)
OPENAI_FIELDS = {
    "model": STANDIN_MODEL_ID,
    "prompt": PROMPT,
    "max_tokens": 1024,
    "temperature": 0.1,
    "top_p": 0.95,
    "seed": 7,
    "stop": list(LLAMA2.stop),
    "n": 1,
}


@pytest.fixture
async def standin() -> AsyncIterator[tuple[str, list[tuple[str, Any]]]]:
    """The stand-in, and every (path, JSON body) its generation routes received."""
    received: list[tuple[str, Any]] = []

    @web.middleware
    async def capture(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):  # type: ignore[no-untyped-def]
        if request.method == "POST":
            received.append((request.path, await request.json()))
        return await handler(request)

    app = create_app()
    app.middlewares.append(capture)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield f"http://127.0.0.1:{server.port}", received
    await server.close()


@pytest.mark.parametrize(
    ("prefix", "path", "body"),
    [
        (
            "",
            "/generate",
            {
                "inputs": PROMPT,
                "parameters": {
                    "temperature": 0.1,
                    "top_p": 0.95,
                    "repetition_penalty": 1.2,
                    "top_k": 50,
                    "max_new_tokens": 1024,
                    "stop": list(LLAMA2.stop),
                    "seed": 7,
                    "do_sample": True,
                    "best_of": 1,
                    "return_full_text": False,
                    "details": True,
                },
            },
        ),
        ("vllm+", "/v1/completions", {**OPENAI_FIELDS, "top_k": 50, "repetition_penalty": 1.2}),
        ("sglang+", "/v1/completions", {**OPENAI_FIELDS, "top_k": 50, "repetition_penalty": 1.2}),
        ("openai+", "/v1/completions", {**OPENAI_FIELDS, "top_k": 50, "repeat_penalty": 1.2}),
    ],
    ids=["tgi", "vllm", "sglang", "llama.cpp"],
)
async def test_each_engine_receives_the_paper_s_sampling_in_its_own_request_body(
    standin: tuple[str, list[tuple[str, Any]]], prefix: str, path: str, body: dict[str, Any]
) -> None:
    url, received = standin
    async with aiohttp.ClientSession() as session:
        backend = make_backend(prefix + url, session)
        assert (await backend.describe()).model_id == STANDIN_MODEL_ID
        completion = await backend.complete(PROMPT, PAPER)
    assert received == [(path, body)]  # exactly these fields: none another server would misread
    assert completion.text.removesuffix(LLAMA2.stop[0]) == standin_answer(PROMPT)


async def test_other_sampling_reaches_every_engine_unchanged(standin: tuple[str, list[tuple[str, Any]]]) -> None:
    url, received = standin
    sampling = GenerationParameters(temperature=0.7, top_p=0.5, repetition_penalty=1.0, top_k=5,
                                    max_new_tokens=64, stop=("</s>", "\n\n"), seed=123)  # fmt: skip
    async with aiohttp.ClientSession() as session:
        for prefix in ("vllm+", "sglang+", "openai+"):
            await make_backend(prefix + url, session).complete(PROMPT, sampling)
    for _, body in received:
        penalty = body.get("repetition_penalty", body.get("repeat_penalty"))
        assert (body["temperature"], body["top_p"], body["top_k"], penalty) == (0.7, 0.5, 5, 1.0)
        assert (body["max_tokens"], body["stop"], body["seed"]) == (64, ["</s>", "\n\n"], 123)


def test_a_spec_names_its_engine_and_a_plain_url_is_tgi() -> None:
    assert split_spec("http://tgi:80") == ("tgi", "http://tgi:80")
    assert split_spec("tgi+http://tgi:80") == ("tgi", "http://tgi:80")
    assert split_spec("vllm+http://v:8000") == ("vllm", "http://v:8000")
    assert split_spec("sglang+https://s:30000/v1") == ("sglang", "https://s:30000/v1")
    assert split_spec("openai+http://llama:8090") == ("openai", "http://llama:8090")
    # A "+" that names no engine (a password, an unknown prefix) is part of the URL.
    assert split_spec("http://user:pa+ss@tgi:80") == ("tgi", "http://user:pa+ss@tgi:80")
    assert split_spec("ollama+http://o:11434") == ("tgi", "ollama+http://o:11434")
    for engine in ("tgi", "vllm", "sglang", "openai"):
        assert split_spec(engine_spec(engine, "http://h:1")) == (engine, "http://h:1")


async def test_make_backend_gives_each_engine_its_backend() -> None:
    async with aiohttp.ClientSession() as session:
        assert isinstance(make_backend("http://h:80", session), TGIBackend)
        for engine in ("vllm", "sglang", "openai"):
            backend = make_backend(f"{engine}+http://user:secret@h:8000/v1", session)
            assert isinstance(backend, OpenAICompletionsBackend) and backend.engine == engine
            assert backend.url == "http://user:***@h:8000"  # its name in metrics and logs


async def test_a_tgi_spec_at_an_openai_server_is_told_every_engine_s_prefix() -> None:
    async def models(_: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "m"}]})

    app = web.Application()  # an OpenAI-compatible server: no /info
    app.router.add_get("/v1/models", models)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    url = f"http://127.0.0.1:{server.port}"
    try:
        with pytest.raises(BackendUnavailable) as refused:
            await probe(url)
        assert f"vllm+{url} (vLLM), sglang+{url} (SGLang) or openai+{url} (llama.cpp, others)" in str(refused.value)
        assert (await probe(f"vllm+{url}")).model_id == "m"
    finally:
        await server.close()
