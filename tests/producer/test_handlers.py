"""The producer's handlers alone, on the in-memory bus (`services/runtime/memory.py`): no NATS."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from proto import (
    Job,
    JobEvent,
    JobManifest,
    JobProgress,
    ObservationMessage,
    replace,
)
from proto import subjects as sub
from services.core.observations import observation_to_dict
from services.datasets import load_split
from services.jobs import prepare_job
from services.producer.service import CHUNK, Producer
from services.runtime.handlers import HandBack, Outgoing, handle_and_publish
from services.runtime.memory import MemoryBus
from tests.support.messages import ANYWHERE, JOB
from tests.support.synthetic import write_sentiment_lines, write_synthetic


def _without_progress(published: Iterable[Outgoing]) -> list[Outgoing]:
    return [item for item in published if not isinstance(item.message, JobProgress)]


async def test_the_producer_publishes_the_manifest_then_the_observations_then_accepted() -> None:
    bus = MemoryBus()
    published = _without_progress(await bus.deliver(Producer(data_roots=ANYWHERE), JOB))
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
    assert await bus.deliver(Producer(data_roots=ANYWHERE), JOB) == []  # redelivered: every id is a repeat


async def test_the_producer_rejects_a_bad_job_with_an_event_and_a_dead_letter(tmp_path: Path) -> None:
    bus = MemoryBus()
    job = replace(JOB, job_id="j2", dataset="RTE", mirror=str(tmp_path))
    (event,) = [item.message for item in await bus.deliver(Producer(data_roots=ANYWHERE), job)]
    assert isinstance(event, JobEvent) and event.event == "rejected" and "no mirror of RTE" in event.detail
    (letter,) = bus.dead_letters
    assert letter.category == "bad-job" and letter.reason.startswith("job j2: no mirror of RTE")


async def test_a_job_whose_split_is_not_a_split_is_rejected(tmp_path: Path) -> None:
    bus = MemoryBus()
    data = tmp_path / "reviews.jsonl"
    data.write_text('{"text": "Good.", "label": "positive"}\n')
    job = Job("j3", "llama2-7b", str(data), "classify", split="../../../x", category="sentiment")
    (event,) = [item.message for item in await bus.deliver(Producer(data_roots=ANYWHERE), job)]
    assert isinstance(event, JobEvent) and event.event == "rejected"
    (letter,) = bus.dead_letters
    assert letter.category == "bad-job" and "unknown split '../../../x'; use one of train, valid, test" in letter.reason


# -- a split published in bounded memory, in the paper's order --


class RecordingBus(MemoryBus):
    """The in-memory bus, also keeping every batch handed to it (repeats included), and
    calling `after(batch)` once a batch is stored: a test's way to act mid-job."""

    def __init__(self, after: Callable[[list[Outgoing]], None] | None = None) -> None:
        super().__init__()
        self.batches: list[list[Outgoing]] = []
        self.after = after

    async def publish(self, outgoing: Iterable[Outgoing], timeout: float = 10.0) -> None:
        batch = list(outgoing)
        self.batches.append(batch)
        await super().publish(batch, timeout)
        if self.after is not None:
            self.after(batch)

    def attempted(self) -> list[int]:
        """The idx of every observation handed over, in order, repeats included."""
        return [item.message.work.observation["idx"] for batch in self.batches for item in batch
                if isinstance(item.message, ObservationMessage)]  # fmt: skip


def _expected(job: Job) -> list[dict[str, Any]]:
    """What the producer published before it streamed: the whole split loaded, shuffled with
    the seed, then `limit`, then `start:stop`; each observation as its work item carries it."""
    prepared = prepare_job(job)
    observations = load_split(prepared.source, job.split, seed=job.seed, mirror=job.mirror)
    chosen = observations if job.limit is None else observations[: job.limit]
    return [observation_to_dict(o) for o in chosen[job.start : job.stop]]


def _published(bus: MemoryBus) -> list[dict[str, Any]]:
    return [o.work.observation for o in bus.of(ObservationMessage)]


def _local_jobs(folder: Path) -> dict[str, Job]:
    """One job per kind of local file, each over more rows than a chunk."""
    rows = write_synthetic(folder, rows=1200, seed=7)
    frame = pd.read_json(rows["sentiment"], lines=True)
    frame.to_csv(folder / "reviews.csv", index=False)
    frame.to_parquet(folder / "reviews.parquet", index=False)
    frame.to_json(folder / "reviews.json", orient="records")  # one array
    local = {"jsonl": rows["sentiment"], "csv": folder / "reviews.csv", "parquet": folder / "reviews.parquet",
             "json": folder / "reviews.json"}  # fmt: skip
    jobs = {kind: Job(f"local-{kind}", "llama2-7b", str(path), "classify", category="sentiment", seed=3)
            for kind, path in local.items()}  # fmt: skip
    jobs["entailment"] = Job("local-e", "llama2-7b", str(rows["entailment"]), "classify", category="entailment",
                             limit=1100, start=40, stop=1050)  # fmt: skip
    jobs["multi-choice"] = Job("local-m", "llama2-7b", str(rows["multi-choice"]), "classify", category="multi-choice",
                               seed=11, start=600)  # fmt: skip
    return jobs


MIRRORED_JOBS = {
    "IMDB": replace(JOB, job_id="m-imdb", limit=None, split="train", seed=5),
    "SST2": replace(JOB, job_id="m-sst2", dataset="SST2", limit=9, start=2, stop=7, split="valid"),
    "RTE": replace(JOB, job_id="m-rte", dataset="RTE", limit=None, seed=42),
    "MCTest": replace(JOB, job_id="m-mctest", dataset="MCTest", limit=None, split="valid"),
    "bAbI-2": replace(JOB, job_id="m-babi", dataset="bAbI-2", limit=None, start=3),
}


@pytest.mark.parametrize("kind", ["jsonl", "csv", "parquet", "json", "entailment", "multi-choice", *MIRRORED_JOBS])
async def test_every_kind_of_source_is_published_in_the_order_and_with_the_rows_it_had(tmp_path: Path, kind: str):
    job = MIRRORED_JOBS[kind] if kind in MIRRORED_JOBS else _local_jobs(tmp_path)[kind]
    expected = _expected(job)
    bus = RecordingBus()
    await bus.deliver(Producer(data_roots=ANYWHERE), job)
    assert _published(bus) == expected and expected
    manifest, *rest = bus.batches
    assert [type(item.message) for item in manifest] == [JobManifest]  # first and alone
    assert isinstance(manifest[0].message, JobManifest) and manifest[0].message.expected == len(expected)
    # Each batch after the first carries the progress up to the chunk stored before it.
    stored = 0
    for batch in rest[:-1]:
        progress = [item.message for item in batch if isinstance(item.message, JobProgress)]
        assert progress == ([JobProgress(job.job_id, stored, len(expected))] if stored else [])
        stored += len(batch) - len(progress)
        assert len(batch) - len(progress) <= CHUNK
    assert [type(item.message) for item in rest[-1]] == [JobProgress, JobEvent]
    assert rest[-1][0].message == JobProgress(job.job_id, len(expected), len(expected))


async def test_the_manifest_is_stored_before_any_row_is_read(tmp_path: Path, monkeypatch) -> None:
    from services import jobs

    bus = MemoryBus()
    seen_when_reading: list[list[type]] = []
    read = jobs.Selection.read

    def reading(selection: jobs.Selection, first: int, count: int) -> list:
        seen_when_reading.append([type(item.message) for item in bus.published])
        return read(selection, first, count)

    monkeypatch.setattr(jobs.Selection, "read", reading)
    job = _local_jobs(tmp_path)["jsonl"]
    await bus.deliver(Producer(data_roots=ANYWHERE), job)
    assert seen_when_reading[0] == [JobManifest]
    assert len(seen_when_reading) == -(-1200 // CHUNK)  # one read per chunk


# -- going on where publication stopped --


async def _stopped_after(chunks: int, job: Job, bus: RecordingBus) -> None:
    """Deliver `job` to a producer told to stop once `chunks` chunks are stored."""
    producer = Producer(data_roots=ANYWHERE)
    await producer.start(bus)
    stored = 0

    def count(batch: list[Outgoing]) -> None:
        nonlocal stored
        stored += any(isinstance(item.message, ObservationMessage) for item in batch)
        if stored == chunks:
            producer.stopping()

    bus.after = count
    with pytest.raises(HandBack, match=f"stopped after {chunks * CHUNK} of 1200 observations"):
        await bus.deliver(producer, job)
    bus.after = None


async def test_a_stopped_job_goes_on_where_it_stopped(tmp_path: Path) -> None:
    job = _local_jobs(tmp_path)["csv"]
    expected = _expected(job)
    bus = RecordingBus()
    await _stopped_after(1, job, bus)
    # Stopping stored the progress of the chunk it finished, and nothing more.
    assert await bus.last(sub.progress_subject(job.job_id), JobProgress) == JobProgress(job.job_id, CHUNK, 1200)
    assert bus.attempted() == [o["idx"] for o in expected[:CHUNK]] and not bus.of(JobEvent)

    again = Producer(data_roots=ANYWHERE)
    await again.start(bus)
    bus.batches.clear()
    await bus.deliver(again, job)
    assert bus.attempted() == [o["idx"] for o in expected[CHUNK:]]  # the rest, once
    assert _published(bus) == expected
    assert [e.event for e in bus.of(JobEvent)] == ["accepted"]
    assert await bus.last(sub.progress_subject(job.job_id), JobProgress) == JobProgress(job.job_id, 1200, 1200)

    bus.batches.clear()
    assert await bus.deliver(again, job) == []  # delivered once more after it finished: nothing new
    assert bus.attempted() == []


async def test_a_producer_that_dies_mid_chunk_is_gone_on_from_the_last_stored_progress(tmp_path: Path) -> None:
    """Killed while a chunk is half stored: the next delivery repeats that chunk only (its
    ids are repeats, which JetStream drops), so each observation is stored once."""
    job = _local_jobs(tmp_path)["jsonl"]
    expected = _expected(job)

    class Killed(Exception):
        pass

    class DyingBus(RecordingBus):
        async def publish(self, outgoing: Iterable[Outgoing], timeout: float = 10.0) -> None:
            batch = list(outgoing)
            if len(self.batches) == 2:  # the manifest, one chunk: the second chunk is cut short
                await super().publish(batch[: len(batch) // 2])
                raise Killed
            await super().publish(batch, timeout)

    bus = DyingBus()
    producer = Producer(data_roots=ANYWHERE)
    await producer.start(bus)
    with pytest.raises(Killed):
        await bus.deliver(producer, job)
    # The second chunk's batch carried the first chunk's progress: that is where it goes on.
    assert await bus.last(sub.progress_subject(job.job_id), JobProgress) == JobProgress(job.job_id, CHUNK, 1200)

    memory = RecordingBus()
    memory.published, memory._ids = bus.published, bus._ids  # the same stream, seen anew
    again = Producer(data_roots=ANYWHERE)
    await again.start(memory)
    await memory.deliver(again, job)
    assert memory.attempted() == [o["idx"] for o in expected[CHUNK:]]
    assert _published(memory) == expected  # each once, in order


async def test_progress_of_another_count_is_not_this_job_s(tmp_path: Path) -> None:
    job = _local_jobs(tmp_path)["jsonl"]
    bus = RecordingBus()
    await bus.publish([Outgoing(sub.progress_subject(job.job_id), JobProgress(job.job_id, 500, 999), "old")])
    await bus.publish([Outgoing(sub.progress_subject("other"), JobProgress("other", 1000, 1200), "other")])
    producer = Producer(data_roots=ANYWHERE)
    await producer.start(bus)
    bus.batches.clear()
    await bus.deliver(producer, job)
    assert len(bus.attempted()) == 1200


async def test_a_row_that_no_longer_reads_rejects_the_job(tmp_path: Path) -> None:
    """The file changes after it was checked and indexed: the job is rejected with the
    reason, not handed back again and again."""
    job = _local_jobs(tmp_path)["jsonl"]

    def truncate(batch: list[Outgoing]) -> None:
        if isinstance(batch[0].message, JobManifest):
            Path(job.dataset).write_text("")

    bus = RecordingBus(after=truncate)
    await bus.deliver(Producer(data_roots=ANYWHERE), job)
    assert not bus.of(ObservationMessage)
    (event,) = bus.of(JobEvent)
    assert event.event == "rejected" and "no JSON object at byte" in event.detail
    (letter,) = bus.dead_letters
    assert letter.category == "bad-job"


# -- memory --


class CountingPublisher:
    """Publishes nowhere: counts what it is given, so the count is all it holds."""

    def __init__(self) -> None:
        self.observations = 0

    async def publish(self, outgoing: Iterable[Outgoing], timeout: float = 10.0) -> None:
        self.observations += sum(isinstance(item.message, ObservationMessage) for item in outgoing)

    async def last(self, subject: str, kind: type) -> None:
        return None


async def _produce(path: Path) -> int:
    job = Job(f"memory-{path.stem}", "llama2-7b", str(path), "classify", category="sentiment")
    publisher = CountingPublisher()
    producer = Producer(data_roots=ANYWHERE)
    await producer.start(publisher)
    await handle_and_publish(producer.handle, job, publisher)
    return publisher.observations


async def test_a_split_is_published_in_bounded_memory(tmp_path: Path) -> None:
    """100,000 rows (11 MB of JSON lines, some 100 MB as observations held at once) take no
    more at the peak than a chunk, the order and the row index."""
    assert await _produce(write_sentiment_lines(tmp_path / "small.jsonl", 1000)) == 1000  # imports done
    large = write_sentiment_lines(tmp_path / "large.jsonl", 100_000)
    gc.collect()
    tracemalloc.start()
    try:
        assert await _produce(large) == 100_000
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5 << 20, f"peak {peak / 2**20:.1f} MiB while publishing a {large.stat().st_size >> 20} MiB file"


# -- a job reads files of its own only under the producer's data roots --


async def test_a_job_s_own_files_are_read_only_under_the_data_roots(tmp_path: Path) -> None:
    from tests.support.synthetic import write_sentiment_lines

    allowed, elsewhere = tmp_path / "allowed", tmp_path / "elsewhere"
    inside = write_sentiment_lines(allowed / "reviews.jsonl", 3)
    outside = write_sentiment_lines(elsewhere / "private.jsonl", 3)
    (allowed / "link.jsonl").symlink_to(outside)
    model = elsewhere / "my-model"
    model.mkdir()
    (model / "tokenizer_config.json").write_text('{"chat_template": "{{ messages[0].content }}"}')

    def job(job_id: str, **fields: str) -> Job:
        return Job(job_id, fields.pop("model", "llama2-7b"), fields.pop("dataset", str(inside)), "classify",
                   category="sentiment", **fields)  # type: ignore[arg-type]  # fmt: skip

    producer = Producer(data_roots=(str(allowed),))
    cases = {
        "inside": job("inside"),
        "outside": job("outside", dataset=str(outside)),
        "dot-dot": job("dot-dot", dataset=str(allowed / ".." / "elsewhere" / "private.jsonl")),
        "symlink": job("symlink", dataset=str(allowed / "link.jsonl")),  # inside by name, outside in fact
        "mirror": job("mirror", dataset="RTE", mirror=str(elsewhere)),
        "model": job("model", model=str(model)),
    }
    events = {}
    for name, case in cases.items():
        bus = MemoryBus()
        published = await bus.deliver(producer, case)
        events[name] = [o.message for o in published if isinstance(o.message, JobEvent)][-1]
    assert events["inside"].event == "accepted"
    for name in ("outside", "dot-dot", "symlink", "mirror", "model"):
        assert events[name].event == "rejected", name
        assert (
            f"is outside the folders this producer may read (INTROSPECT_DATA_ROOTS: {allowed})" in events[name].detail
        )
    # With no data roots (a deployment's default) a job may name datasets, but no file at all.
    bus = MemoryBus()
    (event,) = [o.message for o in await bus.deliver(Producer(), job("none"))]
    assert isinstance(event, JobEvent) and event.event == "rejected"
    assert event.detail.endswith("(INTROSPECT_DATA_ROOTS: none: jobs may name datasets, not files)")
