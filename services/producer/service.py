"""What happens to a job: check it, load its split, publish its manifest and its observations.

The manifest goes first, on the aggregator's stream, so the aggregator knows the job
before any of its results arrive. Observation ids are deterministic (job, idx), so if the
producer dies half-way and the job is redelivered, JetStream drops the repeats.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from proto import Job, JobEvent, JobManifest, ObservationMessage
from proto import subjects as sub
from proto.subjects import ConsumerSpec

from ..datasets import DatasetLoadError
from ..jobs import JOB_ERRORS, prepare_job
from ..models import model_name
from ..runtime.handlers import Outgoing, Reject
from ..runtime.service import ServiceBase
from ..wire import work_item
from . import metrics

log = logging.getLogger("introspect")

CHUNK = 500  # observations published at once; each chunk is stored before the next is sent


class NotServed(ValueError):
    """The job's model is not one this deployment serves."""


_BAD_JOB: tuple[type[Exception], ...] = (*JOB_ERRORS, DatasetLoadError, NotServed)


class Producer(ServiceBase):
    name = "producer"
    accepts = (Job,)

    def __init__(self, served_models: tuple[str, ...] = ()) -> None:
        # A job for a model no gateway serves would wait forever: refuse it up front.
        self.served_models = frozenset(model_name(m) for m in served_models)
        # One split loads at a time: Hugging Face `datasets` is not safe to use from several
        # threads at once, and one load already keeps a core busy.
        self._loading = asyncio.Lock()

    def consumer(self) -> ConsumerSpec:
        return sub.consumer_for("producer")

    async def handle(self, job: Job) -> AsyncIterator[list[Outgoing]]:
        """The manifest, then the observations chunk by chunk, then the `accepted` event."""
        started = time.monotonic()
        try:
            # Checking a local data file reads all of it: off the event loop too.
            prepared = await asyncio.to_thread(prepare_job, job)
            if self.served_models and prepared.model.name not in self.served_models:
                raise NotServed(
                    f"no gateway serves model {prepared.model.name!r} (served: {', '.join(sorted(self.served_models))})"
                )
            # Loading a split can take a while (a download, a parse): keep the event loop free.
            async with self._loading:
                observations = await asyncio.to_thread(prepared.load_observations)
        except _BAD_JOB as error:
            metrics.JOBS.labels("rejected").inc()
            rejected = _event(job.job_id, "rejected", str(error))
            raise Reject(f"job {job.job_id}: {error}", "bad-job", publish=[rejected]) from None

        log.info("job %s: %d observations loaded in %.2f s", job.job_id, len(observations), time.monotonic() - started)
        manifest = JobManifest(
            job=job,
            experiment_id=prepared.experiment.experiment_id,
            experiment=prepared.experiment.args(),
            expected=len(observations),
            setup_seconds=time.monotonic() - started,
        )
        # First and alone: the aggregator must know the job before any of its results arrive.
        yield [Outgoing(sub.MANIFESTS, manifest, sub.manifest_id(job.job_id))]
        chat = prepared.chat
        for first in range(0, len(observations), CHUNK):
            chunk = observations[first : first + CHUNK]
            yield [
                Outgoing(
                    sub.OBSERVATIONS,
                    ObservationMessage(work_item(job.job_id, prepared.task, o, chat)),
                    sub.observation_id(job.job_id, o.idx),
                )
                for o in chunk
            ]
            metrics.OBSERVATIONS.inc(len(chunk))
        yield [_event(job.job_id, "accepted", f"{len(observations)} observations of {manifest.experiment_id}")]
        metrics.JOBS.labels("accepted").inc()


def _event(job_id: str, event: str, detail: str) -> Outgoing:
    return Outgoing(sub.EVENTS, JobEvent(job_id, event, detail, time.time()), f"{job_id}:{event}")
