"""The gateway's handlers alone, on the in-memory bus (`services/runtime/memory.py`): no NATS."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from prometheus_client import REGISTRY

from proto import Answer, GenerationRequest, ScoredResult, replace
from proto import subjects as sub
from services.core.chat import ChatTurn
from services.gateway.service import Gateway
from services.models import chat_format_of
from services.runtime.memory import MemoryBus
from services.standin import standin_answer
from services.standin.server import STANDIN_MODEL_ID
from services.steps import answered, next_message
from services.wire import system_of
from tests.support.messages import work as _work


async def test_the_gateway_answers_then_takes_the_observation_s_next_step(tmp_path: Path, standin_url: str) -> None:
    gateway, bus = Gateway(tmp_path, backends=(standin_url,)), MemoryBus()
    await gateway.start(bus)
    try:
        request = next_message(_work(), partitions=1).message  # the scorer's first step: classify's one question
        assert isinstance(request, GenerationRequest)
        (first,) = await bus.deliver(gateway, request)
        # classify asks one question: the answer ends the observation, and the gateway sends
        # the scored result itself (what the scorer would have made of a reply).
        result = first.message
        assert isinstance(result, ScoredResult) and first.subject == sub.RESULTS
        assert first.msg_id == sub.result_id("j1", 4) and result.sources == [gateway.source]
        answer = Answer(_standin_answer(request), 0.0)
        assert first == next_message(answered(request.work, answer, gateway.source), partitions=1)
        # The same question in another job: answered from the cache, the same record.
        hits = _cache_hits()
        (second,) = await bus.deliver(gateway, replace(request, work=_work("j2")))
        assert isinstance(second.message, ScoredResult) and second.message.record == result.record
        assert _cache_hits() == hits + 1
    finally:
        await gateway.close()
    assert (tmp_path / "served-model").read_text().strip() == STANDIN_MODEL_ID


async def test_a_re_run_is_answered_from_the_cache_in_one_message(tmp_path: Path, standin_url: str) -> None:
    """Counterfactual asks three questions. The first run sends each next question back
    through the stream (the model is needed); a re-run's first request comes back as the
    scored result: the later steps were taken from this partition's cache, no message sent."""
    gateway, bus = Gateway(tmp_path, backends=(standin_url,)), MemoryBus()
    await gateway.start(bus)
    try:
        outgoing = next_message(_work(task="counterfactual"), partitions=1)
        first_request, steps = outgoing, 0
        while isinstance(outgoing.message, GenerationRequest):
            assert outgoing.subject == sub.generation_subject("llama2-7b", 0)
            assert outgoing.msg_id == sub.request_id("j1", 4, steps)
            (outgoing,) = await bus.deliver(gateway, outgoing.message)
            steps += 1
        assert steps == 3 and isinstance(outgoing.message, ScoredResult)
        hits = _cache_hits()
        assert isinstance(first_request.message, GenerationRequest)
        again = replace(first_request.message, work=_work("j2", task="counterfactual"))
        (result,) = await bus.deliver(gateway, again)
        assert isinstance(result.message, ScoredResult) and result.msg_id == sub.result_id("j2", 4)
        assert result.message.record == outgoing.message.record
        assert _cache_hits() == hits + 3
    finally:
        await gateway.close()


async def test_the_next_question_of_another_partition_goes_to_it(tmp_path: Path, standin_url: str) -> None:
    """With two partitions, the steps taken from the cache are this partition's alone: the
    first question that belongs to the other one is sent to it, cached here or not."""
    work = _work(task="counterfactual")
    gateway, bus = Gateway(tmp_path, backends=(standin_url,), partition=0, partitions=2), MemoryBus()
    await gateway.start(bus)
    try:
        # Every question answered here first (as if this partition owned them all), so its
        # cache holds the whole transcript.
        outgoing, transcript = next_message(work, partitions=1), []
        while isinstance(outgoing.message, GenerationRequest):
            transcript.append(outgoing.message.message)
            (outgoing,) = await bus.deliver(gateway, outgoing.message)
        owners = [sub.partition_of(work.chat, question, 2) for question in transcript]
        # The re-run: the first request is taken here; after it, steps stay here while their
        # questions are partition 0's.
        first = GenerationRequest(transcript[0], _work("j2", task="counterfactual"))
        (onward,) = await bus.deliver(gateway, first)
        elsewhere = next((step for step in range(1, len(owners)) if owners[step] != 0), None)
        if elsewhere is None:
            assert isinstance(onward.message, ScoredResult)
        else:
            assert isinstance(onward.message, GenerationRequest)
            assert onward.subject == sub.generation_subject("llama2-7b", owners[elsewhere])
            assert onward.msg_id == sub.request_id("j2", 4, elsewhere)
            assert onward.message.message == transcript[elsewhere]
    finally:
        await gateway.close()


def _cache_hits() -> float:
    return REGISTRY.get_sample_value("introspect_cache_hits_total") or 0.0


def _standin_answer(request: GenerationRequest) -> str:
    """What the stand-in says to the request's rendered prompt, cleaned as a task reads it."""
    chat = request.work.chat
    prompt = chat_format_of(chat.model, chat.template).render([ChatTurn(request.message)], system_of(chat))
    return standin_answer(prompt).strip()


async def test_the_gateway_dead_letters_requests_it_cannot_render(tmp_path: Path, standin_url: str) -> None:
    gateway, bus = Gateway(tmp_path, backends=(standin_url,)), MemoryBus()
    await gateway.start(bus)
    try:
        work = _work()
        unknown = replace(work, chat=replace(work.chat, model="no-such-model"))
        mistral = replace(work, chat=replace(work.chat, model="mistral-v1-7b", system="Be brief."))
        for bad in (unknown, mistral):
            assert await bus.deliver(gateway, GenerationRequest("Is it positive?", bad)) == []
    finally:
        await gateway.close()
    assert [letter.category for letter in bus.dead_letters] == ["bad-request", "bad-request"]
    assert "no-such-model" in bus.dead_letters[0].reason
    assert "system message" in bus.dead_letters[1].reason.lower()


async def test_an_offline_gateway_answers_hits_and_dead_letters_misses(tmp_path: Path, standin_url: str) -> None:
    online, bus = Gateway(tmp_path, backends=(standin_url,)), MemoryBus()
    await online.start(bus)
    asked = GenerationRequest("What is the sentiment? Paragraph: A warm, funny film.", _work())
    (first,) = await bus.deliver(online, asked)
    await online.close()

    offline = Gateway(tmp_path, backends=(), offline=True)  # the cache and the served-model file it left
    await offline.start(bus)
    try:
        (again,) = await bus.deliver(offline, replace(asked, work=_work("j3")))
        assert isinstance(again.message, ScoredResult) and isinstance(first.message, ScoredResult)
        assert again.message.record == first.message.record
        assert await bus.deliver(offline, GenerationRequest("Never asked before.", _work("j4"))) == []
    finally:
        await offline.close()
    (letter,) = bus.dead_letters
    assert letter.category == "offline-miss"


async def test_a_template_over_its_limits_is_that_request_s_dead_letter(tmp_path: Path, standin_url: str) -> None:
    """Rendered in a thread within its limits: the request is refused in well under a
    second of work, and the gateway goes on answering others."""
    from proto import replace as replace_message

    gateway, bus = Gateway(tmp_path, backends=(standin_url,)), MemoryBus()
    await gateway.start(bus)
    try:
        spinning = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
        work = _work()
        chat = replace_message(work.chat, model="my-model", template={"chat_template": spinning})
        hostile = GenerationRequest("Is it positive?", replace_message(work, chat=chat))
        assert await bus.deliver(gateway, hostile) == []
        (letter,) = bus.dead_letters
        assert letter.category == "bad-request" and "over its limit of 1000000 steps" in letter.reason
        (answer,) = await bus.deliver(gateway, GenerationRequest("What is the sentiment? Paragraph: Fine.", _work()))
        assert isinstance(answer.message, ScoredResult)
    finally:
        await gateway.close()


async def test_work_the_task_cannot_replay_is_refused_before_the_server_is_asked(
    tmp_path: Path, standin_url: str
) -> None:
    gateway, bus = Gateway(tmp_path, backends=(standin_url,)), MemoryBus()
    await gateway.start(bus)
    try:
        done = answered(_work(), Answer("positive", 0.5), None)  # classify's one question is answered
        failed = answered(_work(task="counterfactual"), Answer("", 0.1, "422: input too long"), None)
        unknown_task = replace(_work(), task="summarise")
        for bad in (done, failed, unknown_task):
            assert await bus.deliver(gateway, GenerationRequest("A question never asked.", bad)) == []
        async with aiohttp.ClientSession() as session, session.get(f"{standin_url}/stand-in/stats") as response:
            assert (await response.json()).get("requests", 0) == 0
    finally:
        await gateway.close()
    assert [letter.category for letter in bus.dead_letters] == ["bad-work"] * 3
    assert "finished after 1 answers, 2 given" in bus.dead_letters[0].reason
    assert "ended at a generation error" in bus.dead_letters[1].reason
    assert "unknown task 'summarise'" in bus.dead_letters[2].reason
