"""The scorer's handlers alone, on the in-memory bus (`services/runtime/memory.py`): no NATS."""

from __future__ import annotations

from proto import (
    GenerationReply,
    GenerationRequest,
    ObservationMessage,
    ScoredResult,
    replace,
)
from proto import subjects as sub
from services.core.replay import Generation
from services.runtime.memory import MemoryBus
from services.scorer.service import Scorer
from services.wire import answer_of
from tests.support.messages import work as _work


async def test_the_scorer_asks_the_question_then_scores_the_answer() -> None:
    bus, scorer = MemoryBus(), Scorer(partitions=4)
    work = _work()
    (question,) = await bus.deliver(scorer, ObservationMessage(work))
    request = question.message
    assert isinstance(request, GenerationRequest) and request.message.startswith("What is the sentiment")
    assert question.subject == sub.generation_subject("llama2-7b", sub.partition_of(work.chat, request.message, 4))
    assert question.msg_id == sub.request_id("j1", 4, 0)

    reply = GenerationReply(answer=answer_of(Generation("positive", 0.5)), work=work)
    (result,) = await bus.deliver(scorer, reply)
    scored = result.message
    assert isinstance(scored, ScoredResult) and result.subject == sub.RESULTS
    assert (scored.idx, scored.record["predict"], scored.record["correct"]) == (4, "positive", True)


async def test_the_scorer_dead_letters_work_it_cannot_replay() -> None:
    bus, scorer = MemoryBus(), Scorer()
    unknown_task = replace(_work(), task="summarise")
    too_many_answers = replace(_work(), answers=[answer_of(Generation("positive", 0.5))] * 2)
    assert await bus.deliver(scorer, ObservationMessage(unknown_task)) == []
    assert await bus.deliver(scorer, ObservationMessage(too_many_answers)) == []
    assert [letter.category for letter in bus.dead_letters] == ["bad-work", "bad-work"]
    assert "unknown task 'summarise'" in bus.dead_letters[0].reason
    assert "finished after 1 answers, 2 given" in bus.dead_letters[1].reason
