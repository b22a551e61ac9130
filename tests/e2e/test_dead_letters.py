"""Bad input on every input subject ends in the dead-letter stream with a reason; work goes on."""

from __future__ import annotations

import asyncio
import time

import msgpack
import nats
import pytest

from proto import DeadLetter, Job, JobManifest, ScoredResult, encode
from proto import subjects as sub
from services.cli import main
from services.client import dead_letters, wait_for_job
from services.core.results import ExperimentSpec
from services.jobs import with_job_id
from services.local import LocalPipeline
from services.runtime.settings import Settings
from tests.conftest import DATASET_MIRROR
from tests.support.pipeline import metric_total, submit_jobs, wait_complete

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

INPUT_SUBJECTS = (
    sub.JOBS,
    sub.OBSERVATIONS,
    sub.REPLIES,
    sub.generation_subject("llama2-7b", 0),
    sub.MANIFESTS,
    sub.RESULTS,
)
RECORD = {"idx": 7, "label": "positive", "predict_prompt": "p", "predict_answer": "a", "predict": "positive",
          "correct": True, "duration": 0.0, "error": None}  # fmt: skip


def _bad_payloads() -> list[tuple[str, bytes, str]]:
    """(subject, payload, what the reason must say) for each kind of bad input on each subject."""
    cases = []
    for subject in INPUT_SUBJECTS:
        cases.append((subject, b"\xc1 this is not msgpack", "not msgpack"))
        cases.append((subject, msgpack.packb({"v": 99, "kind": "job"}), "schema version 99"))
        cases.append((subject, msgpack.packb({"v": 1, "kind": "dead-letter"}), "field 'kind'"))
        cases.append((subject, b"\x00" * (600 << 10), "exceeds"))
    job = Job(job_id="bad-1", model="llama2-7b", dataset="NO-SUCH-DATASET", task="classify")
    cases.append((sub.JOBS, encode(job), "unknown dataset"))
    cases.append(
        (sub.JOBS, encode(Job(job_id="bad-2", model="gpt-9", dataset="IMDB", task="classify")), "unknown model")
    )
    missing = msgpack.packb({"v": 1, "kind": "job", "job_id": "bad-3", "model": "llama2-7b", "task": "classify"})
    cases.append((sub.JOBS, missing, "field 'dataset' is missing"))
    cases.append((sub.RESULTS, encode(ScoredResult("nobody", "classify", 7, RECORD)), "unknown job 'nobody'"))
    return cases


async def _publish(url: str, messages: list[tuple[str, bytes]]) -> None:
    client = await nats.connect(url)
    js = client.jetstream()
    for subject, payload in messages:
        await js.publish(subject, payload)
    await client.close()


def _wait_for_letters(settings: Settings, count: int, timeout: float = 60.0) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        letters = asyncio.run(dead_letters(settings))
        if len(letters) >= count:
            return letters
        time.sleep(0.25)
    raise AssertionError(f"{len(letters)} dead letters, expected {count}")


def test_bad_messages_become_dead_letters_with_reasons_and_work_goes_on(
    tmp_path, capsys, pipeline: LocalPipeline
) -> None:
    cases = _bad_payloads()
    settings = Settings(nats_url=pipeline.nats_url)
    asyncio.run(_publish(pipeline.nats_url, [(subject, payload) for subject, payload, _ in cases]))
    letters = _wait_for_letters(settings, len(cases))
    assert len(letters) == len(cases)
    by_payload = {(letter.subject, letter.payload[:1000]): letter for _, letter in letters}
    for subject, payload, reason in cases:
        letter = by_payload[(subject, payload[:1000])]
        assert reason in letter.reason, (subject, letter.reason)
    services = {letter.service for _, letter in letters}
    assert services == {"producer", "scorer", "gateway", "aggregator"}
    assert metric_total(pipeline, "", "introspect_dead_letters_total") == len(cases)

    # Every service still works: a real job runs to the end.
    job = Job(job_id="", model="llama2-7b", dataset="RTE", task="redacted", mirror=str(DATASET_MIRROR))
    (submitted,) = submit_jobs(pipeline, [job])
    assert wait_complete(pipeline, [submitted.job_id], timeout=60)[submitted.job_id]["received"] == 12

    # The CLI lists them, one line each with its reason.
    assert main(["dead-letters", "list", "--service", "aggregator", "--nats", pipeline.nats_url]) == 0
    listed = capsys.readouterr()
    assert (
        "unknown job 'nobody'" in listed.out and "9 dead letter(s)" in listed.err
    )  # 4 on each of its 2 subjects, and one unknown job


def test_a_dead_letter_replays_once_its_cause_is_fixed(tmp_path, capsys, pipeline: LocalPipeline) -> None:
    """A result that arrived before its job's manifest is kept, and counted when replayed."""
    settings = Settings(nats_url=pipeline.nats_url)
    result = ScoredResult("late-job", "classify", 7, RECORD)
    asyncio.run(_publish(pipeline.nats_url, [(sub.RESULTS, encode(result))]))
    ((seq, letter),) = _wait_for_letters(settings, 1)
    assert "unknown job" in letter.reason

    job = Job(job_id="late-job", model="llama2-7b", dataset="IMDB", task="classify")
    experiment = {"model_name": "llama2-7b", "system_message": "none", "dataset": "IMDB", "split": "test",
                  "task": "classify", "task_config": [], "seed": 0, "max_observations": None}  # fmt: skip
    manifest = JobManifest(job, ExperimentSpec.from_args(experiment).experiment_id, experiment, expected=1)
    asyncio.run(_publish(pipeline.nats_url, [(sub.MANIFESTS, encode(manifest))]))

    assert main(["dead-letters", "replay", "--seq", str(seq), "--nats", pipeline.nats_url]) == 0
    assert "replayed 1 dead letter(s)" in capsys.readouterr().err
    status = wait_complete(pipeline, ["late-job"], timeout=30)["late-job"]
    assert status["results"]["correct"] == 1 and status["received"] == 1
    assert asyncio.run(dead_letters(settings)) == []  # replayed letters leave the stream


@pytest.fixture
def slow_pipeline(tmp_path):
    """A pipeline whose answers take a second each: a job lasts while bad messages arrive."""
    with LocalPipeline(tmp_path / "slow", standin_args=("--latency", "1")) as running:
        yield running


async def test_whoever_waits_on_a_job_hears_each_dead_letter_as_it_happens(slow_pipeline: LocalPipeline) -> None:
    pipeline = slow_pipeline
    heard: list[DeadLetter] = []
    job = Job(job_id="", model="llama2-7b", dataset="RTE", task="classify", mirror=str(DATASET_MIRROR), limit=2)
    settings = Settings(nats_url=pipeline.nats_url)

    async def a_bad_message_meanwhile() -> None:
        while not heard:  # until the listener hears it: it subscribes as the wait starts
            await _publish(pipeline.nats_url, [(sub.OBSERVATIONS, b"\xc1 this is not msgpack")])
            await asyncio.sleep(0.5)

    waiting = asyncio.create_task(
        wait_for_job(settings, pipeline.aggregator_url, with_job_id(job), lambda *_: None, on_dead_letter=heard.append)
    )
    await asyncio.wait_for(a_bad_message_meanwhile(), timeout=60)
    status = await asyncio.wait_for(waiting, timeout=120)
    assert status["complete"]
    assert heard[0].service == "scorer" and heard[0].reason.startswith("invalid message: not msgpack")
