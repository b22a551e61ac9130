"""From a job, as a user submits it, to everything needed to run it.

One place turns a `proto.Job` into the experiment (its id and the paper's `args`), the
task, the chat settings and the dataset source; `introspect evaluate`, `submit` and the
producer all use it, so a job means the same thing wherever it runs.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from proto import Chat, Job, replace

from .core.chat import (
    GenerationParameters,
    SystemMessage,
    SystemMessageNotSupported,
    UnknownModel,
    generation_defaults,
    render_checked,
)
from .core.config import InvalidTaskConfig, TaskConfig
from .core.datasets import UnknownDataset, resolve_dataset
from .core.observations import DATASET_CATEGORIES, SPLIT_NAMES, InvalidObservation, Observation
from .core.results import ExperimentSpec
from .core.tasks import Task, UnknownTask, task_kind
from .datasets import DatasetLoadError, LocalFileDataset, SplitRows, check_local_file, open_split, seeded_order
from .models import ResolvedModel, load_model
from .wire import chat_of

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

LOCAL_FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")

# What is wrong with a job as its user wrote it: the CLI prints these in one line, the
# producer dead-letters the job with them.
JOB_ERRORS: tuple[type[Exception], ...] = (
    InvalidTaskConfig,
    UnknownDataset,
    UnknownModel,
    UnknownTask,
    SystemMessageNotSupported,
    InvalidObservation,
    FileNotFoundError,
    DatasetLoadError,
)


@dataclass(frozen=True, slots=True)
class PreparedJob:
    job: Job
    model: ResolvedModel
    system: SystemMessage
    task: Task
    source: str | LocalFileDataset
    experiment: ExperimentSpec
    parameters: GenerationParameters

    @property
    def chat(self) -> Chat:
        return chat_of(self.model, self.system, self.parameters)

    def open_observations(self) -> Selection:
        """The job's rows, counted and in order but not read (see `Selection`)."""
        job = self.job
        rows = open_split(self.source, job.split, mirror=job.mirror)
        return Selection(rows, published_order(len(rows), job.seed, job.limit, job.start, job.stop))

    def load_observations(self) -> list[Observation]:
        """The job's rows: the split, shuffled with the seed, then `limit`, then `start:stop`."""
        selection = self.open_observations()
        return selection.read(0, len(selection))


@dataclass(frozen=True, slots=True)
class Selection:
    """A job's observations in the order they are published, read from the split a few at
    a time: what is held is the order (4 bytes a row), never the rows."""

    rows: SplitRows
    order: npt.NDArray[np.integer[Any]]  # the split positions (= idx) in published order

    def __len__(self) -> int:
        return len(self.order)

    def read(self, first: int, count: int) -> list[Observation]:
        """The observations published from position `first`, at most `count` of them."""
        return self.rows.read(self.order[first : first + count].tolist())


def prepare_job(job: Job) -> PreparedJob:
    """Check a job and resolve its parts; a mistake raises the user-facing error that names it."""
    model = load_model(job.model)
    system = model.default_system if job.system_message is None else SystemMessage.parse(job.system_message)
    render_checked(model.chat_format, "check", system)  # refuses a system message the model cannot take
    source: str | LocalFileDataset
    if job.split not in SPLIT_NAMES:  # it names the result files: nothing else may pass
        raise UnknownDataset(f"unknown split {job.split!r}; use one of {', '.join(SPLIT_NAMES)}")
    if Path(job.dataset).suffix.lower() in LOCAL_FILE_SUFFIXES:
        if job.category not in DATASET_CATEGORIES:
            raise UnknownDataset(f"a local data file needs --category ({', '.join(DATASET_CATEGORIES)})")
        source = LocalFileDataset(Path(job.dataset), job.category, dict(job.columns), dict(job.labels))
        check_local_file(source)
        category: str = job.category
        dataset_name = source.name
    elif suffix := Path(job.dataset).suffix:
        raise UnknownDataset(
            f"{job.dataset}: unsupported file type {suffix!r}; use {', '.join(LOCAL_FILE_SUFFIXES)} (or a dataset name)"
        )
    else:
        definition = resolve_dataset(job.dataset)
        source, category, dataset_name = definition.name, definition.category, definition.name
    if job.start < 0 or (job.stop is not None and job.stop < job.start) or (job.limit is not None and job.limit < 0):
        raise InvalidObservation(f"bad selection: limit={job.limit}, start={job.start}, stop={job.stop}")
    task = Task(task_kind(job.task), category, TaskConfig.of(job.config))
    experiment = ExperimentSpec(
        model=model.name,
        system_message=system.id_part,
        dataset=dataset_name,
        split=job.split,
        task=task.kind,
        config=tuple(task.config.sorted()),
        seed=job.seed,
        max_observations=job.limit,
    )
    parameters = generation_defaults(model.chat_format, job.seed)
    return PreparedJob(job, model, system, task, source, experiment, parameters)


def published_order(
    count: int, seed: int, limit: int | None, start: int, stop: int | None
) -> npt.NDArray[np.integer[Any]]:
    """The positions of a split of `count` rows that a job publishes, in order: the split
    shuffled with the seed, then the first `limit`, then `start:stop` of those."""
    chosen = seeded_order(count, seed)
    return (chosen if limit is None else chosen[:limit])[start:stop]


class OutsideDataRoots(PermissionError):
    """A job names a file or folder outside the folders this producer may read."""


def local_paths(job: Job) -> list[str]:
    """The files and folders of its own a job has read: its data file, its dataset mirror,
    its model's tokenizer_config.json (or the folder holding it)."""
    named = [job.mirror] if job.mirror else []
    if Path(job.dataset).suffix.lower() in LOCAL_FILE_SUFFIXES:
        named.append(job.dataset)
    model = Path(job.model)
    if model.suffix == ".json" or model.is_dir():  # what `load_model` reads as a local model
        named.append(job.model)
    return named


def job_folders(job: Job) -> tuple[str, ...]:
    """The folders holding a job's own files: the data roots a pipeline run for it needs."""
    return tuple(sorted({str(path if path.is_dir() else path.parent) for path in map(Path, local_paths(job))}))


def check_data_roots(job: Job, roots: tuple[str, ...]) -> None:
    """Refuse a job that would have the producer read a file outside `roots` (see
    `local_paths`). Paths are compared once resolved, so neither `..` nor a symbolic link
    leads outside."""
    allowed = [Path(root).resolve() for root in roots]
    for name in local_paths(job):
        path = Path(name).resolve()
        if not any(path.is_relative_to(root) for root in allowed):
            where = ", ".join(str(root) for root in allowed) or "none: jobs may name datasets, not files"
            raise OutsideDataRoots(
                f"{name} is outside the folders this producer may read (INTROSPECT_DATA_ROOTS: {where})"
            )


def with_job_id(job: Job) -> Job:
    """Give a job its id: the experiment id and a token, so each submission is its own run."""
    if job.job_id:
        return job
    experiment_id = prepare_job(job).experiment.experiment_id
    return replace(job, job_id=f"{experiment_id}.{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(2)}")
