"""The in-process runner: bounded concurrency, chat rendering, errors, and the stand-in."""

from __future__ import annotations

import asyncio

import pytest

from services.backends.contract import Completion, GenerationRejected
from services.core.chat import LLAMA2, NO_SYSTEM, GenerationParameters, generation_defaults
from services.core.config import TaskConfig
from services.core.datasets import DATASETS
from services.core.observations import SentimentObservation
from services.core.replay import Generation
from services.core.results import aggregate
from services.core.tasks import TASK_KINDS, Task
from services.datasets import load_split
from services.generation import ChatModel
from services.runner import evaluate, run_observation
from services.standin import complete_in_process, standin_answer
from tests.conftest import DATASET_MIRROR

REVIEWS = [SentimentObservation(i, "positive" if i % 2 else "negative", f"Review number {i}.") for i in range(40)]


async def test_evaluate_keeps_order_and_never_exceeds_the_concurrency() -> None:
    in_flight = peak = 0

    async def generate(message: str) -> Generation:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.001)
        in_flight -= 1
        return Generation("positive", duration=0.1)

    seen = []
    records, running = await evaluate(
        Task("classify", "sentiment"), REVIEWS, generate, concurrency=5, on_record=seen.append
    )
    assert peak == 5
    assert [r.idx for r in records] == list(range(40))
    assert len(seen) == 40
    assert running.results() == aggregate("classify", records).results()
    assert running.correct == 20 and running.duration == pytest.approx(4.0)


async def test_evaluate_refuses_a_concurrency_below_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        await evaluate(Task("classify", "sentiment"), REVIEWS, standin_generate, concurrency=0)


async def standin_generate(message: str) -> Generation:
    return Generation(standin_answer(message))


async def test_chat_model_renders_the_template_and_cleans_the_answer() -> None:
    seen: list[tuple[str, GenerationParameters]] = []

    async def complete(prompt: str, parameters: GenerationParameters) -> Completion:
        seen.append((prompt, parameters))
        return Completion(" negative </s>", 0.3)

    model = ChatModel(LLAMA2, NO_SYSTEM, generation_defaults(LLAMA2, seed=7), complete)
    record = await run_observation(Task("classify", "sentiment"), REVIEWS[0], model.generate)
    prompt, parameters = seen[0]
    assert prompt.startswith("<s>[INST] What is the sentiment of the following paragraph?") and prompt.endswith(
        "[/INST]"
    )
    assert parameters.seed == 7
    assert record.predict_answer == "negative" and record.correct is True and record.duration == 0.3


async def test_a_rejected_generation_becomes_an_error_record() -> None:
    async def complete(prompt: str, parameters: GenerationParameters) -> Completion:
        raise GenerationRejected("422 Unprocessable Entity: input is too long")

    model = ChatModel(LLAMA2, NO_SYSTEM, generation_defaults(LLAMA2), complete)
    records, running = await evaluate(Task("counterfactual", "sentiment"), REVIEWS[:3], model.generate)
    assert all(r.error == "422 Unprocessable Entity: input is too long" for r in records)
    assert running.results()["error"] == 3


@pytest.mark.parametrize("kind", TASK_KINDS)
async def test_the_stand_in_drives_every_task_to_non_trivial_results(kind: str) -> None:
    """Over the fixture datasets of every category, the stand-in's answers reach correct and
    incorrect predictions, mismatches, and (for explanations) faithful and unfaithful ones."""
    model = ChatModel(LLAMA2, NO_SYSTEM, generation_defaults(LLAMA2), complete_in_process)
    for name in ("IMDB", "RTE", "bAbI-3"):
        observations = load_split(name, "train", mirror=DATASET_MIRROR) + load_split(
            name, "test", mirror=DATASET_MIRROR
        )
        task = Task(kind, DATASETS[name].category, TaskConfig.of([]))
        records, running = await evaluate(task, observations, model.generate)
        results = running.results()
        assert 0 < results["correct"] < results["total"], (name, results)
        assert results["missmatch"] > 0, (name, results)
        if kind in ("counterfactual", "redacted", "importance"):
            judged = [r.faithful for r in records if r.faithful is not None]
            assert True in judged and False in judged, (name, kind)


def test_the_stand_in_is_deterministic_and_reads_rendered_prompts() -> None:
    message = (
        "Is it possible to determine the sentiment of the following paragraph?"
        ' Answer only "yes" or "no". Do not explain the answer.\n\nParagraph: Fine.'
    )
    rendered = f"<s>[INST] {message} [/INST]"
    assert standin_answer(rendered) == standin_answer(rendered)
    assert standin_answer(rendered) in ("yes", "No.", "Yes, it is possible.", "no")
    assert "does not recognise" in standin_answer("Tell me a story.")
