"""The one place where wire messages (`proto`) and core values meet.

`proto` knows nothing of the protocol and the core knows nothing of messages; every
conversion between the two, in either direction, is a function here.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from proto import Answer, AnswerSource, Chat, Sampling, ScoredResult, WorkItem

from .backends.contract import Complete
from .core.chat import GenerationParameters, SystemMessage
from .core.config import TaskConfig
from .core.observations import Observation, observation_from_dict, observation_to_dict
from .core.records import ResultRecord, record_from_dict, record_to_dict
from .core.replay import Generation
from .core.tasks import Task, kind_spec, task_kind
from .generation import ChatModel
from .models import ResolvedModel, chat_format_of

# -- the chat: model, system message, sampling --


def sampling_of(parameters: GenerationParameters) -> Sampling:
    return Sampling(**{**parameters.to_dict(), "stop": list(parameters.stop)})


def parameters_of(sampling: Sampling) -> GenerationParameters:
    return GenerationParameters(
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        repetition_penalty=sampling.repetition_penalty,
        top_k=sampling.top_k,
        max_new_tokens=sampling.max_new_tokens,
        stop=tuple(sampling.stop),
        seed=sampling.seed,
    )


def chat_of(model: ResolvedModel, system: SystemMessage, parameters: GenerationParameters) -> Chat:
    return Chat(
        model=model.name,
        system=system.text if system.kind == "custom" and system.text is not None else system.kind,
        sampling=sampling_of(parameters),
        template=model.template,
    )


def system_of(chat: Chat) -> SystemMessage:
    return _system_message(chat.system)


@lru_cache(maxsize=64)
def _system_message(system: str) -> SystemMessage:
    return SystemMessage.parse(system)


def chat_model_of(chat: Chat, complete: Complete) -> ChatModel:
    """The model a request names, generating through `complete`; raises UnknownModel."""
    return ChatModel(chat_format_of(chat.model, chat.template), system_of(chat), parameters_of(chat.sampling), complete)


# -- an observation's state: task, observation, answers so far --


def work_item(job_id: str, task: Task, observation: Observation, chat: Chat) -> WorkItem:
    return WorkItem(job_id, task.kind, task.category, task.config.sorted(), observation_to_dict(observation), chat)


def task_of(work: WorkItem) -> Task:
    """Raises UnknownTask or InvalidTaskConfig."""
    return _task(work.task, work.category, tuple(work.config))


@lru_cache(maxsize=256)
def _task(kind: str, category: str, config: tuple[str, ...]) -> Task:
    return Task(task_kind(kind), category, TaskConfig.of(config))


def observation_of(work: WorkItem) -> Observation:
    """Raises InvalidObservation."""
    return observation_from_dict(work.category, work.observation)


def generation_of(answer: Answer) -> Generation:
    """An answer in a work item, as the task reads it."""
    return Generation(answer.text, answer.duration, answer.error)


def answer_of(generation: Generation) -> Answer:
    return Answer(generation.text, generation.duration, generation.error)


# -- results --


def scored_result(
    job_id: str, record: ResultRecord, task_kind: str, sources: Sequence[AnswerSource] = ()
) -> ScoredResult:
    """The result of one observation, with where its answers came from (for provenance)."""
    return ScoredResult(job_id, task_kind, record.idx, record_to_dict(record), list(sources))


def record_of(result: ScoredResult) -> ResultRecord:
    """Raises TypeError or ValueError (UnknownTask) for a record that is not the task's."""
    return record_from_dict(kind_spec(result.task).record, result.record)
