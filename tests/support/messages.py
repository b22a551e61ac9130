"""Messages for handler tests: a small job and the work items of its observations."""

from __future__ import annotations

from proto import Job, WorkItem, replace
from services.core.observations import SentimentObservation
from services.jobs import prepare_job
from services.wire import work_item
from tests.conftest import DATASET_MIRROR

JOB = Job("j1", "llama2-7b", "IMDB", "classify", mirror=str(DATASET_MIRROR), limit=3)
REVIEW = SentimentObservation(idx=4, label="positive", text="A warm, funny film.")


def work(job_id: str = "j1", task: str = "classify", observation: SentimentObservation = REVIEW) -> WorkItem:
    """The work item of `observation` in a copy of JOB, before any answer."""
    prepared = prepare_job(replace(JOB, job_id=job_id, task=task))
    return work_item(job_id, prepared.task, observation, prepared.chat)


ANYWHERE = ("/",)  # data roots for a test's producer: its files are in temporary folders
