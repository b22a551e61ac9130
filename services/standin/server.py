"""The stand-in model server: speaks TGI's HTTP protocol, answers deterministically.

Routes as TGI serves them: `POST /generate` (one object), `POST /` (a list of one, which
the official `text-generation` client uses), `GET /info`, `GET /health`; as an
OpenAI-compatible server (vLLM, llama.cpp) serves them: `POST /v1/completions` and
`GET /v1/models`; plus
`GET /stand-in/stats` with request counters for tests and benchmarks, and
`POST /stand-in/faults/overload` (`{"seconds": N}`), a test fault: every generation
request gets 429 for the next N seconds, as from a TGI server swamped by other clients. Latency, a
concurrency limit (429 past it, like TGI's overload answer), a share of 5xx failures, a
share of requests never answered (a hung server, for timeouts) and a prompt-length limit
(422, like TGI's validation error) are configurable. It names
itself a stand-in in `/info`, in a response header and in its log line.
"""

from __future__ import annotations

import asyncio
import errno
import json
import signal
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import uvloop
from aiohttp import web

from ..runtime.handoff import announce_ready, listening_socket
from ..runtime.settings import PortInUse
from .answers import STANDIN_MODEL_ID, STANDIN_NAME, prompt_roll, standin_answer

_HEADER = {"X-Introspect-Stand-In": STANDIN_NAME}
_INJECTED_OVERLOAD = {"error": "Model is overloaded (stand-in: injected overload)", "error_type": "overloaded"}
Reply = tuple[int, Any, float, tuple[int, int]]  # status, body, seconds, (prompt, generated) tokens


@dataclass(frozen=True, slots=True)
class StandInSettings:
    latency: float = 0.0  # seconds per generation
    max_concurrent: int = 128  # requests past this many in flight get 429
    error_every: int = 0  # every n-th generate request fails with 503 (0: never)
    max_input_chars: int = 100_000  # longer prompts get 422
    hang_every: int = 0  # every n-th generate request is never answered (0: never)


@dataclass(slots=True)
class Occupancy:
    """How busy the server's slots were kept: slot-seconds of generation, counted as requests
    start and end, and that count as of the end of the last stretch with every slot taken.
    After that stretch the client had fewer questions than slots (a job's last observations):
    nothing waited for a slot, so a benchmark's "busy while work waits" stops there."""

    slots: int
    in_flight: int = 0
    busy: float = 0.0  # slot-seconds generating
    changed_at: float = 0.0
    last_full_at: float = 0.0  # unix seconds: when every slot was last taken (0: never)
    busy_until_full: float = 0.0  # `busy` at that moment

    def change(self, delta: int, now: float) -> None:
        if self.changed_at:
            self.busy += self.in_flight * (now - self.changed_at)
        self.changed_at = now
        if self.in_flight >= self.slots:
            self.last_full_at, self.busy_until_full = now, self.busy
        self.in_flight += delta

    def stats(self) -> dict[str, float]:
        return {
            "busy_slot_seconds": self.busy,
            "last_full_at": self.last_full_at,
            "busy_slot_seconds_until_full": self.busy_until_full,
        }


def create_app(settings: StandInSettings = StandInSettings()) -> web.Application:
    stats: Counter[str] = Counter()
    # When the first generation started and the last one ended (unix seconds): the window
    # over which a benchmark measures how busy the server was kept.
    window: dict[str, float] = {}
    occupancy = Occupancy(settings.max_concurrent)
    # A 429 storm injected through /stand-in/faults/overload: until this monotonic time,
    # every generation request is answered "overloaded".
    storm = {"until": 0.0}

    async def generate_one(request: web.Request, openai: bool = False) -> Reply:
        """(HTTP status, body, seconds, tokens) for one request, in TGI's shape or, with `openai`, OpenAI's."""
        stats["requests"] += 1
        try:
            body = await request.json()
            if openai:
                prompt, parameters = body["prompt"], {k: v for k, v in body.items() if k != "prompt"}
            else:
                prompt, parameters = body["inputs"], body.get("parameters") or {}
            if not isinstance(prompt, str) or not isinstance(parameters, dict):
                raise TypeError
        except (json.JSONDecodeError, KeyError, TypeError):
            stats["rejected"] += 1
            expected = "prompt (string)" if openai else "inputs (string) and parameters"
            return (
                422,
                {"error": f"Input validation error: expected {expected}", "error_type": "validation"},
                0.0,
                (0, 0),
            )
        if len(prompt) > settings.max_input_chars:
            stats["rejected"] += 1
            message = f"Input validation error: `inputs` must have less than {settings.max_input_chars} characters"
            return 422, {"error": message, "error_type": "validation"}, 0.0, (0, 0)
        if time.monotonic() < storm["until"]:
            stats["overloaded"] += 1
            stats["storm_429"] += 1
            return 429, _INJECTED_OVERLOAD, 0.0, (0, 0)
        if occupancy.in_flight >= settings.max_concurrent:
            stats["overloaded"] += 1
            return 429, {"error": "Model is overloaded", "error_type": "overloaded"}, 0.0, (0, 0)
        if settings.error_every and (stats["requests"] % settings.error_every == 0):
            stats["failed"] += 1
            return 503, {"error": "stand-in: injected failure", "error_type": "generation"}, 0.0, (0, 0)

        if settings.hang_every and (stats["requests"] % settings.hang_every == 0):
            stats["hung"] += 1
            await asyncio.Event().wait()  # a server that took the request and went silent

        occupancy.change(+1, time.time())
        window.setdefault("first_started_at", occupancy.changed_at)
        stats["peak_in_flight"] = max(stats["peak_in_flight"], occupancy.in_flight)
        try:
            if settings.latency:
                await asyncio.sleep(settings.latency)
        finally:
            occupancy.change(-1, time.time())
        stats["generated"] += 1
        window["last_finished_at"] = time.time()
        # The stand-in counts words as tokens.
        if openai:
            text = standin_answer(prompt)
            tokens = (len(prompt.split()), len(text.split()))
            return 200, _openai_response(text, tokens), settings.latency, tokens
        body = _response(prompt, parameters)
        return 200, body, settings.latency, (len(prompt.split()), body["details"]["generated_tokens"])

    def reply(status: int, payload: Any, seconds: float, tokens: tuple[int, int]) -> web.Response:
        headers = {**_HEADER, "x-inference-time": str(round(seconds * 1000))}
        if status == 200:  # TGI's token headers
            stats["prompt_tokens"] += tokens[0]
            stats["generated_tokens"] += tokens[1]
            headers["x-prompt-tokens"], headers["x-generated-tokens"] = str(tokens[0]), str(tokens[1])
        return web.json_response(payload, status=status, headers=headers)

    async def generate(request: web.Request) -> web.Response:
        return reply(*await generate_one(request))

    async def compat(request: web.Request) -> web.Response:
        status, payload, seconds, tokens = await generate_one(request)
        return reply(status, [payload] if status == 200 else payload, seconds, tokens)

    async def completions(request: web.Request) -> web.Response:
        return reply(*await generate_one(request, openai=True))

    async def models(_: web.Request) -> web.Response:
        listing = {"object": "list", "data": [{"id": STANDIN_MODEL_ID, "object": "model", "owned_by": STANDIN_NAME}]}
        return web.json_response(listing, headers=_HEADER)

    async def info(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "model_id": STANDIN_MODEL_ID,
                "model_pipeline_tag": "stand-in",
                "max_concurrent_requests": settings.max_concurrent,
                "version": "stand-in",
                "description": STANDIN_NAME,
            },
            headers=_HEADER,
        )

    async def health(_: web.Request) -> web.Response:
        return web.Response(status=200, headers=_HEADER)

    async def stats_view(_: web.Request) -> web.Response:
        return web.json_response({**stats, **window, **occupancy.stats()}, headers=_HEADER)

    async def overload(request: web.Request) -> web.Response:
        """A test fault: answer 429 to every generation request for the next `seconds`."""
        try:
            seconds = float((await request.json())["seconds"])
            if not 0 <= seconds <= 3600:
                raise ValueError
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            return web.json_response({"error": 'expected {"seconds": 0 to 3600}'}, status=400, headers=_HEADER)
        storm["until"] = time.monotonic() + seconds
        stats["storms"] += 1
        return web.json_response({"overloaded_for": seconds}, headers=_HEADER)

    app = web.Application()
    app.add_routes(
        [
            web.post("/generate", generate),
            web.post("/", compat),
            web.get("/info", info),
            web.get("/health", health),
            web.get("/stand-in/stats", stats_view),
            web.post("/stand-in/faults/overload", overload),
            web.post("/v1/completions", completions),
            web.get("/v1/models", models),
        ]
    )
    return app


def _response(prompt: str, parameters: dict[str, Any]) -> dict[str, Any]:
    text = standin_answer(prompt)
    stop = [s for s in parameters.get("stop") or [] if s]
    # Like a real model, sometimes end on a stop sequence, which TGI keeps in the text.
    if stop and prompt_roll(prompt, "stop") < 50:
        text, finish = text + stop[0], "stop_sequence"
    else:
        finish = "eos_token"
    tokens = text.split() or [""]
    return {
        "generated_text": text,
        "details": {
            "finish_reason": finish,
            "generated_tokens": len(tokens),
            "seed": parameters.get("seed"),
            "prefill": [],
            "tokens": [{"id": i, "text": token, "logprob": 0.0, "special": False} for i, token in enumerate(tokens)],
        },
    }


def _openai_response(text: str, tokens: tuple[int, int]) -> dict[str, Any]:
    """An OpenAI completions answer: like vLLM, the text ends before any stop sequence."""
    return {
        "id": f"stand-in-{prompt_roll(text, 'id')}",
        "object": "text_completion",
        "model": STANDIN_MODEL_ID,
        "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": tokens[0], "completion_tokens": tokens[1]},
    }


def serve(
    settings: StandInSettings,
    host: str = "127.0.0.1",
    port: int = 8080,
    listen_fd: int | None = None,
    ready_fd: int | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT; on `listen_fd`'s socket when a parent handed one down."""
    # uvloop and no access log: the stand-in should add as little latency as it can, so a
    # benchmark measures the pipeline, not the stand-in.
    uvloop.run(_serve(settings, host, port, listen_fd, ready_fd))


async def _serve(settings: StandInSettings, host: str, port: int, listen_fd: int | None, ready_fd: int | None) -> None:
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    handed_down = listening_socket(listen_fd)
    site = web.SockSite(runner, handed_down) if handed_down else web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as error:
        await runner.cleanup()
        if error.errno == errno.EADDRINUSE:
            raise PortInUse(f"port {port} on {host} is in use; give the stand-in another with --port") from None
        raise
    if handed_down is not None:
        host, port = handed_down.getsockname()[:2]
    print(f"{STANDIN_NAME} on http://{host}:{port}", flush=True)
    announce_ready(ready_fd)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
