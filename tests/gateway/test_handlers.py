"""The gateway's handlers alone, on the in-memory bus (`services/runtime/memory.py`): no NATS."""

from __future__ import annotations

from pathlib import Path

from proto import (
    GenerationReply,
    GenerationRequest,
    replace,
)
from proto import subjects as sub
from services.core.chat import ChatTurn
from services.gateway.service import Gateway
from services.models import chat_format_of
from services.runtime.memory import MemoryBus
from services.standin import standin_answer
from services.standin.server import STANDIN_MODEL_ID
from services.wire import system_of
from tests.support.messages import work as _work


async def test_the_gateway_answers_then_answers_from_its_cache(tmp_path: Path, standin_url: str) -> None:
    gateway, bus = Gateway(tmp_path, backends=(standin_url,)), MemoryBus()
    await gateway.start(bus)
    try:
        request = GenerationRequest("What is the sentiment? Paragraph: A warm, funny film.", _work())
        (first,) = await bus.deliver(gateway, request)
        reply = first.message
        assert isinstance(reply, GenerationReply) and first.msg_id == sub.reply_id("j1", 4, 0)
        assert reply.cached is False and reply.work == request.work and reply.answer.error is None
        assert reply.answer.text == _standin_answer(request)
        # The same question in another job: answered from the cache, same answer.
        (second,) = await bus.deliver(gateway, replace(request, work=_work("j2")))
        assert isinstance(second.message, GenerationReply) and second.message.cached is True
        assert second.message.answer == reply.answer
    finally:
        await gateway.close()
    assert (tmp_path / "served-model").read_text().strip() == STANDIN_MODEL_ID


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
    (answered,) = await bus.deliver(online, asked)
    await online.close()

    offline = Gateway(tmp_path, backends=(), offline=True)  # the cache and the served-model file it left
    await offline.start(bus)
    try:
        (again,) = await bus.deliver(offline, replace(asked, work=_work("j3")))
        assert isinstance(again.message, GenerationReply) and again.message.cached
        assert isinstance(answered.message, GenerationReply) and again.message.answer == answered.message.answer
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
        assert isinstance(answer.message, GenerationReply)
    finally:
        await gateway.close()
