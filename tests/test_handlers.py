"""Each service's handlers alone, on the in-memory bus: no NATS, milliseconds a message.

`MemoryBus.deliver` runs a message through the codec and the handler as the worker does,
keeps what the handler returns (dropping repeated message ids, as JetStream does) and the
dead letters of what it rejects.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from proto import (
    GenerationReply,
    GenerationRequest,
    Job,
    JobEvent,
    JobManifest,
    ObservationMessage,
    ScoredResult,
    WorkItem,
    replace,
)
from proto import subjects as sub
from services.aggregator.service import Aggregator
from services.core.chat import ChatTurn
from services.core.observations import SentimentObservation
from services.core.replay import Generation, run_transcript
from services.core.tasks import Task
from services.gateway.service import Gateway
from services.jobs import prepare_job
from services.models import chat_format_of
from services.producer.service import Producer
from services.runtime.memory import MemoryBus
from services.scorer.service import Scorer
from services.standin import standin_answer
from services.standin.server import STANDIN_MODEL_ID, StandInSettings, create_app
from services.wire import answer_of, scored_result, system_of, work_item

from .conftest import DATASET_MIRROR

JOB = Job("j1", "llama2-7b", "IMDB", "classify", mirror=str(DATASET_MIRROR), limit=3)
REVIEW = SentimentObservation(idx=4, label="positive", text="A warm, funny film.")


def _work(job_id: str = "j1", task: str = "classify", observation: SentimentObservation = REVIEW) -> WorkItem:
    prepared = prepare_job(replace(JOB, job_id=job_id, task=task))
    return work_item(job_id, prepared.task, observation, prepared.chat)


# -- producer --


async def test_the_producer_publishes_the_manifest_then_the_observations_then_accepted() -> None:
    bus = MemoryBus()
    published = await bus.deliver(Producer(), JOB)
    kinds = [type(item.message) for item in published]
    assert kinds == [JobManifest, ObservationMessage, ObservationMessage, ObservationMessage, JobEvent]
    manifest = published[0].message
    assert isinstance(manifest, JobManifest) and manifest.expected == 3 and manifest.job == JOB
    assert manifest.experiment_id.startswith("analysis_m-llama2-7b_y-none_d-imdb_p-test_t-classify")
    observations = bus.of(ObservationMessage)
    assert [item.msg_id for item in published[1:4]] == [sub.observation_id("j1", o.work.idx) for o in observations]
    assert {o.work.task for o in observations} == {"classify"} and len({o.work.idx for o in observations}) == 3
    (accepted,) = bus.of(JobEvent)
    assert accepted.event == "accepted" and accepted.detail.startswith("3 observations of ")
    assert await bus.deliver(Producer(), JOB) == []  # redelivered: every id is a repeat


async def test_the_producer_rejects_a_bad_job_with_an_event_and_a_dead_letter(tmp_path: Path) -> None:
    bus = MemoryBus()
    job = replace(JOB, job_id="j2", dataset="RTE", mirror=str(tmp_path))
    (event,) = [item.message for item in await bus.deliver(Producer(), job)]
    assert isinstance(event, JobEvent) and event.event == "rejected" and "no mirror of RTE" in event.detail
    (letter,) = bus.dead_letters
    assert letter.category == "bad-job" and letter.reason.startswith("job j2: no mirror of RTE")


# -- scorer --


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


# -- gateway --


@pytest.fixture
async def standin_url() -> AsyncIterator[str]:
    server = TestServer(create_app(StandInSettings()), host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("/")).rstrip("/")
    await server.close()


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

    offline = Gateway(tmp_path, backends=())  # the cache and the served-model file it left
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


# -- aggregator --


def _result(job_id: str, idx: int, predict_answer: str = "positive") -> ScoredResult:
    observation = SentimentObservation(idx=idx, label="positive", text=f"Review {idx}.")
    return scored_result(
        job_id, run_transcript(Task("classify", "sentiment"), observation, [predict_answer]), "classify"
    )


def _manifest(job_id: str, expected: int) -> JobManifest:
    prepared = prepare_job(replace(JOB, job_id=job_id))
    spec = prepared.experiment
    return JobManifest(job=replace(JOB, job_id=job_id), experiment_id=spec.experiment_id, experiment=spec.args(),
                       expected=expected)  # fmt: skip


async def test_the_aggregator_counts_each_record_once_and_finishes_the_job(tmp_path: Path) -> None:
    aggregator, bus = Aggregator(tmp_path), MemoryBus()
    await aggregator.start(bus)
    try:
        assert await bus.deliver(aggregator, _manifest("j1", 2)) == []
        assert await bus.deliver(aggregator, _result("j1", 0)) == []
        assert await bus.deliver(aggregator, _result("j1", 0)) == []  # a redelivery: counted once
        assert aggregator.jobs["j1"].received == 1
        (completed,) = await bus.deliver(aggregator, _result("j1", 1, "negative"))
    finally:
        await aggregator.close()
    event = completed.message
    assert isinstance(event, JobEvent) and event.event == "completed" and completed.msg_id == "j1:completed"
    result = json.loads(Path(aggregator.jobs["j1"].status()["result_file"]).read_text())
    assert (result["results"]["correct"], result["results"]["total"]) == (1, 2)

    restarted = Aggregator(tmp_path)  # a restart: the job is known complete, nothing re-published
    await restarted.start(bus)
    try:
        assert restarted.jobs["j1"].complete and restarted.jobs["j1"].received == 2
    finally:
        await restarted.close()
    assert len(bus.of(JobEvent)) == 1


async def test_the_aggregator_dead_letters_results_it_cannot_place(tmp_path: Path) -> None:
    aggregator, bus = Aggregator(tmp_path), MemoryBus()
    await aggregator.start(bus)
    try:
        await bus.deliver(aggregator, _manifest("j1", 5))
        good = _result("j1", 0)
        assert await bus.deliver(aggregator, _result("unknown-job", 0)) == []
        assert await bus.deliver(aggregator, replace(good, idx=3)) == []  # does not match its record
        assert await bus.deliver(aggregator, replace(good, record={"idx": 1})) == []  # not a record
    finally:
        await aggregator.close()
    assert [letter.category for letter in bus.dead_letters] == ["unknown-job", "bad-record", "bad-record"]
    assert aggregator.jobs["j1"].received == 0
