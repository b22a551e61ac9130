"""The stand-in TGI server, the official client against it, and the TGI backend's retries."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from text_generation import AsyncClient
from text_generation.errors import OverloadedError, ValidationError

from services.backends.contract import GenerationRejected
from services.backends.tgi import BackendUnavailable, RetryPolicy, TGIBackend
from services.core.chat import LLAMA2, NO_SYSTEM, generation_defaults
from services.core.tasks import Task
from services.datasets import load_split
from services.generation import ChatModel
from services.runner import evaluate
from services.standin import complete_in_process
from services.standin.server import STANDIN_MODEL_ID, Occupancy, StandInSettings, create_app
from tests.conftest import DATASET_MIRROR

PARAMETERS = generation_defaults(LLAMA2, seed=0)


async def _serve(settings: StandInSettings) -> TestServer:
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    return server


@pytest.fixture
async def standin() -> AsyncIterator[TestServer]:
    server = await _serve(StandInSettings())
    yield server
    await server.close()


def _url(server: TestServer) -> str:
    return str(server.make_url("/")).rstrip("/")


async def _stats(session: aiohttp.ClientSession, server: TestServer) -> dict:
    async with session.get(f"{_url(server)}/stand-in/stats") as response:
        return await response.json()


async def test_the_official_text_generation_client_works_unchanged(standin: TestServer) -> None:
    client = AsyncClient(_url(standin))
    prompt = '<s>[INST] What is the sentiment of the following paragraph? Answer only "positive". [/INST]'
    response = await client.generate(prompt, max_new_tokens=20, stop_sequences=["</s>"], seed=0)
    assert response.generated_text.removesuffix("</s>") in {
        "positive", "Negative", 'The sentiment of the paragraph is "positive".', "The paragraph seems to be negative.",
        "neutral", "unknown", "I am sorry, I cannot classify this paragraph.", "Hard to tell.",
    }  # fmt: skip
    assert response.details.generated_tokens >= 1
    strict = await _serve(StandInSettings(max_input_chars=10))
    try:
        with pytest.raises(ValidationError):
            await AsyncClient(_url(strict)).generate(prompt)
    finally:
        await strict.close()


async def test_info_and_health_name_the_stand_in(standin: TestServer) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{_url(standin)}/info") as response:
            info = await response.json()
            assert info["model_id"] == STANDIN_MODEL_ID and "not a language model" in info["description"]
            assert info["max_concurrent_requests"] == 128
        async with session.get(f"{_url(standin)}/health") as response:
            assert response.status == 200 and "stand-in" in response.headers["X-Introspect-Stand-In"]


async def test_past_its_concurrency_limit_it_answers_429() -> None:
    server = await _serve(StandInSettings(latency=0.2, max_concurrent=2))
    try:
        with pytest.raises(OverloadedError):
            await asyncio.gather(*(AsyncClient(_url(server)).generate(f"prompt {i}") for i in range(4)))
    finally:
        await server.close()


async def test_an_injected_overload_answers_429_to_every_request_until_it_ends(standin: TestServer) -> None:
    """The 429 storm of the fault tests: every generation request refused while it lasts,
    whatever the load; {"seconds": 0} ends it at once."""
    client = AsyncClient(_url(standin))
    async with aiohttp.ClientSession() as session:

        async def overload(payload: object) -> int:
            async with session.post(f"{_url(standin)}/stand-in/faults/overload", json=payload) as response:
                return response.status

        assert await overload({"seconds": 3600}) == 200
        for i in range(3):  # one at a time: far under the concurrency limit
            with pytest.raises(OverloadedError):
                await client.generate(f"prompt {i}")
        assert await overload({"seconds": 0}) == 200
        assert (await client.generate("prompt 0")).generated_text
        for bad in ({}, {"seconds": -1}, {"seconds": "soon"}, [1]):
            assert await overload(bad) == 400
        stats = await _stats(session, standin)
        assert stats["storm_429"] == stats["overloaded"] == 3 and stats["storms"] == 2 and stats["generated"] == 1


async def test_the_backend_retries_overload_and_failures_until_answered() -> None:
    server = await _serve(StandInSettings(latency=0.05, max_concurrent=2, error_every=3))
    try:
        async with aiohttp.ClientSession() as session:
            backend = TGIBackend(_url(server), session, RetryPolicy(max_attempts=50, first_delay=0.01, max_delay=0.05))
            answers = await asyncio.gather(*(backend.complete(f"prompt {i}", PARAMETERS) for i in range(8)))
            assert len(answers) == 8 and all(answer.seconds == pytest.approx(0.05) for answer in answers)
            stats = await _stats(session, server)
            assert stats["generated"] == 8
            assert stats["overloaded"] + stats["failed"] == backend.retries > 0
            assert stats["peak_in_flight"] <= 2
    finally:
        await server.close()


async def test_a_rejected_request_is_a_result_not_a_retry() -> None:
    server = await _serve(StandInSettings(max_input_chars=10))
    try:
        async with aiohttp.ClientSession() as session:
            backend = TGIBackend(_url(server), session)
            with pytest.raises(GenerationRejected, match="422: Input validation error"):
                await backend.complete("a prompt longer than ten characters", PARAMETERS)
            assert backend.retries == 0
    finally:
        await server.close()


async def test_an_unreachable_server_ends_in_a_clear_error(closed_port: int) -> None:
    async with aiohttp.ClientSession() as session:
        backend = TGIBackend(f"http://127.0.0.1:{closed_port}", session, RetryPolicy(max_attempts=3, first_delay=0.001))
        with pytest.raises(BackendUnavailable, match="after 3 attempts"):
            await backend.complete("x", PARAMETERS)


async def test_over_http_the_records_equal_those_of_the_in_process_stand_in(standin: TestServer) -> None:
    observations = load_split("RTE", "train", mirror=DATASET_MIRROR)
    task = Task("counterfactual", "entailment")
    in_process = ChatModel(LLAMA2, NO_SYSTEM, PARAMETERS, complete_in_process)
    expected, expected_total = await evaluate(task, observations, in_process.generate)
    async with aiohttp.ClientSession() as session:
        over_http = ChatModel(LLAMA2, NO_SYSTEM, PARAMETERS, TGIBackend(_url(standin), session).complete)
        records, total = await evaluate(task, observations, over_http.generate, concurrency=8)
        stats = await _stats(session, standin)
    assert records == expected
    assert total.results() == expected_total.results()
    asked = sum(1 + (r.explain_prompt is not None) + (r.explain_predict_prompt is not None) for r in records)
    assert stats["generated"] == asked


def test_occupancy_counts_busy_slot_seconds_up_to_the_end_of_the_last_full_stretch() -> None:
    slots = Occupancy(slots=2)
    slots.change(+1, 10.0)
    slots.change(+1, 11.0)  # both slots taken from 11 s
    slots.change(-1, 13.0)  # a full stretch ends: 1 x 1 s + 2 x 2 s busy so far
    slots.change(+1, 14.0)  # full again
    slots.change(-1, 15.0)  # the last full stretch ends here
    slots.change(-1, 17.0)  # the tail, one slot busy for 2 s: after the last full stretch
    assert slots.stats() == {
        "busy_slot_seconds": 1.0 + 4.0 + 1.0 + 2.0 + 2.0,
        "last_full_at": 15.0,
        "busy_slot_seconds_until_full": 1.0 + 4.0 + 1.0 + 2.0,
    }
    assert slots.in_flight == 0


async def test_the_stats_say_when_every_slot_was_last_taken() -> None:
    server = await _serve(StandInSettings(latency=0.2, max_concurrent=2))
    try:
        async with aiohttp.ClientSession() as session:
            body = {"inputs": "<s>[INST] a [/INST]", "parameters": {"max_new_tokens": 5}}
            statuses = await asyncio.gather(*(session.post(f"{_url(server)}/generate", json=body) for _ in range(2)))
            assert [response.status for response in statuses] == [200, 200]
            stats = await _stats(session, server)
        assert stats["last_full_at"] >= stats["first_started_at"] > 0
        assert stats["busy_slot_seconds_until_full"] >= 0.2  # one slot for 0.2 s at least, before both ended
    finally:
        await server.close()
