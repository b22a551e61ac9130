"""What happens to a job: check it, open its split, publish its manifest and its observations.

The split is opened, not loaded (`datasets.open_split`): its rows are counted and indexed,
and read a chunk at a time as they are published, so a million rows take the memory of a
chunk and of the order (8 bytes a row). The manifest goes first, as soon as the count is
known, on the aggregator's stream, so the aggregator knows the job before any of its
results arrive.

Observation ids are deterministic (job, idx), so repeats are dropped by JetStream. Beyond
that, after each stored chunk the producer records how far it got (a `JobProgress` on the
job's progress subject, a stream that keeps the last one per job), and a job delivered
again (the producer was stopped or killed) goes on from there instead of from row 0.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from proto import InvalidMessage, Job, JobEvent, JobManifest, JobProgress, ObservationMessage
from proto import subjects as sub
from proto.subjects import ConsumerSpec

from ..core.observations import InvalidObservation
from ..datasets import DatasetLoadError
from ..jobs import JOB_ERRORS, OutsideDataRoots, check_data_roots, prepare_job
from ..models import model_name
from ..runtime.handlers import HandBack, Outgoing, Publisher, Reject
from ..runtime.service import ServiceBase
from ..wire import work_item
from . import metrics

log = logging.getLogger("introspect")

CHUNK = 500  # observations published at once; each chunk is stored before the next is sent


class NotServed(ValueError):
    """The job's model is not one this deployment serves."""


_BAD_JOB: tuple[type[Exception], ...] = (*JOB_ERRORS, DatasetLoadError, NotServed, OutsideDataRoots)
# A row that cannot be read once publication has begun (its file changed since it was checked).
_BAD_ROW: tuple[type[Exception], ...] = (DatasetLoadError, InvalidObservation)


class Producer(ServiceBase):
    name = "producer"
    accepts = (Job,)

    def __init__(self, served_models: tuple[str, ...] = (), data_roots: tuple[str, ...] = ()) -> None:
        # A job for a model no gateway serves would wait forever: refuse it up front.
        self.served_models = frozenset(model_name(m) for m in served_models)
        # Anyone who may submit a job could otherwise have the producer read, and the API
        # serve back as records, any file the producer can: only these folders.
        self.data_roots = data_roots
        # One split opens at a time: Hugging Face `datasets` is not safe to use from several
        # threads at once, and indexing a large file already keeps a core busy.
        self._opening = asyncio.Lock()
        self._progress: Publisher | None = None  # where a job's progress is read back; set by start
        self._stopping = False

    def consumer(self) -> ConsumerSpec:
        return sub.consumer_for("producer")

    async def start(self, bus: Publisher) -> None:
        self._progress = bus

    def stopping(self) -> None:
        """The process is stopping: end each job's publication at its next chunk boundary,
        its progress stored, and hand the job back (`HandBack`) for a producer to go on."""
        self._stopping = True

    async def handle(self, job: Job) -> AsyncIterator[list[Outgoing]]:
        """The manifest, then the observations chunk by chunk (each batch also carries the
        progress up to the chunk before it, stored by then), then the `accepted` event."""
        started, taken_at = time.monotonic(), time.time()
        try:
            check_data_roots(job, self.data_roots)  # before any file is opened
            # Checking a local data file reads all of it: off the event loop too.
            prepared = await asyncio.to_thread(prepare_job, job)
            if self.served_models and prepared.model.name not in self.served_models:
                raise NotServed(
                    f"no gateway serves model {prepared.model.name!r} (served: {', '.join(sorted(self.served_models))})"
                )
            # Indexing a split can take a while (a download, a pass over a file): keep the event loop free.
            async with self._opening:
                selection = await asyncio.to_thread(prepared.open_observations)
        except _BAD_JOB as error:
            raise _rejected(job, error) from None
        if self._stopping:
            raise HandBack(f"job {job.job_id}: the producer is stopping")

        expected = len(selection)
        log.info("job %s: %d observations indexed in %.2f s", job.job_id, expected, time.monotonic() - started)
        manifest = JobManifest(
            job=job,
            experiment_id=prepared.experiment.experiment_id,
            experiment=prepared.experiment.args(),
            expected=expected,
            setup_seconds=time.monotonic() - started,
            chat=prepared.chat,  # provenance: what every question of the job is asked with
            started_at=taken_at,
        )
        # First and alone: the aggregator must know the job before any of its results arrive.
        yield [Outgoing(sub.MANIFESTS, manifest, sub.manifest_id(job.job_id))]

        published = saved = await self._resume_point(job.job_id, expected)
        chat = prepared.chat
        while published < expected and not self._stopping:
            try:
                chunk = await asyncio.to_thread(selection.read, published, CHUNK)
            except _BAD_ROW as error:
                raise _rejected(job, error) from None
            batch = [] if saved == published else [_progress(job.job_id, published, expected)]
            saved = published
            batch += [
                Outgoing(
                    sub.OBSERVATIONS,
                    ObservationMessage(work_item(job.job_id, prepared.task, o, chat)),
                    sub.observation_id(job.job_id, o.idx),
                )
                for o in chunk
            ]
            yield batch  # returns once JetStream has stored all of it
            published += len(chunk)
            metrics.OBSERVATIONS.inc(len(chunk))
        progress = [] if saved == published else [_progress(job.job_id, published, expected)]
        if published < expected:
            if progress:
                yield progress
            log.info("job %s: stopping after %d of %d observations", job.job_id, published, expected)
            raise HandBack(f"job {job.job_id}: stopped after {published} of {expected} observations")
        yield [*progress, _event(job.job_id, "accepted", f"{expected} observations of {manifest.experiment_id}")]
        metrics.JOBS.labels("accepted").inc()

    async def _resume_point(self, job_id: str, expected: int) -> int:
        """How many of the job's observations are stored already, by its last progress."""
        if self._progress is None:
            return 0
        try:
            progress = await self._progress.last(sub.progress_subject(job_id), JobProgress)
        except InvalidMessage as error:
            log.warning("job %s: its progress does not read (%s); publishing from the start", job_id, error)
            return 0
        # Another job's whose subject reads the same, or another count: not this job's progress.
        if progress is None or progress.job_id != job_id or progress.expected != expected:
            return 0
        if progress.published:
            log.info("job %s: going on after %d of %d observations", job_id, progress.published, expected)
        return min(progress.published, expected)


def _rejected(job: Job, error: Exception) -> Reject:
    metrics.JOBS.labels("rejected").inc()
    rejected = _event(job.job_id, "rejected", str(error))
    return Reject(f"job {job.job_id}: {error}", "bad-job", publish=[rejected])


def _progress(job_id: str, published: int, expected: int) -> Outgoing:
    """How far the job got; its id names the count, so a repeat is dropped."""
    progress = JobProgress(job_id, published, expected)
    return Outgoing(sub.progress_subject(job_id), progress, f"{job_id}:progress:{published}")


def _event(job_id: str, event: str, detail: str) -> Outgoing:
    return Outgoing(sub.EVENTS, JobEvent(job_id, event, detail, time.time()), f"{job_id}:{event}")
