"""The paper's experiment set, as the original code's job scripts submit it.

The original (AndreasMadsen/llm-introspection) schedules its experiments with one shell
script per task, `jobs/<task>.sh`: each loops over five models, four datasets and the
task's prompt variants, skips every variant but the default one for all models but
llama2-70b, and runs `experiments/analysis.py --split test --seed 0`. `paper_grid` is that
loop; `tests/test_grid.py` holds it to the scripts' lists, copied there with their paths.

`introspect submit --grid paper [--task T]` turns it into jobs and says first how many
generations it will take (`estimate_generations`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .core.tasks import TASK_KINDS

GRID_NAMES = ("paper",)

PAPER_MODELS = ("llama2-70b", "llama2-7b", "falcon-40b", "falcon-7b", "mistral-v1-7b")
PAPER_DATASETS = ("IMDB", "RTE", "bAbI-1", "MCTest")
PAPER_SPLIT = "test"
PAPER_SEED = 0
# The one model whose prompt variants the scripts run; every other model runs the default prompt.
VARIANTS_MODEL = "llama2-70b"

# Each task's `task_config` loop, in the scripts' order; () is the default prompt ('').
PAPER_VARIANTS: dict[str, tuple[tuple[str, ...], ...]] = {
    "classify": (
        (),
        ("c-persona-you",),
        ("c-persona-human",),
        ("m-removed",),
        ("m-removed", "c-persona-you"),
        ("m-removed", "c-persona-human"),
        ("c-no-redacted",),
        ("c-no-redacted", "c-persona-you"),
        ("c-no-redacted", "c-persona-human"),
    ),
    "answerable": (
        (),
        ("c-persona-you", "i-persona-you"),
        ("c-persona-human", "i-persona-human"),
        ("i-options",),
        ("i-options", "c-persona-you", "i-persona-you"),
        ("i-options", "c-persona-human", "i-persona-human"),
    ),
    "counterfactual": (
        (),
        ("c-persona-you", "e-persona-you"),
        ("c-persona-human", "e-persona-human"),
        ("e-implcit-target",),
        ("e-implcit-target", "c-persona-you", "e-persona-you"),
        ("e-implcit-target", "c-persona-human", "e-persona-human"),
    ),
    "redacted": (
        (),
        ("c-persona-you", "e-persona-you"),
        ("c-persona-human", "e-persona-human"),
        ("m-removed",),
        ("m-removed", "c-persona-you", "e-persona-you"),
        ("m-removed", "c-persona-human", "e-persona-human"),
    ),
    "importance": (
        (),
        ("c-persona-you", "e-persona-you"),
        ("c-persona-human", "e-persona-human"),
        ("m-removed",),
        ("m-removed", "c-persona-you", "e-persona-you"),
        ("m-removed", "c-persona-human", "e-persona-human"),
    ),
}

# Rows of each dataset's test split as Introspect reads it (the paper's selections): IMDB's
# test set; RTE's GLUE validation set (GLUE's test labels are hidden); bAbI task 1's en-10k
# test file; MCTest mc500's test set (150 stories, 4 questions each). Used for the estimate.
TEST_ROWS: dict[str, int] = {"IMDB": 25_000, "RTE": 277, "bAbI-1": 1_000, "MCTest": 600}

# The questions a task asks of one observation at most: classify asks once; answerable asks
# the answer and whether it can answer; the explanation tasks classify, explain, and
# classify the explained paragraph. An observation whose first answer is rejected asks fewer.
QUESTIONS: dict[str, int] = {"classify": 1, "answerable": 2, "counterfactual": 3, "redacted": 3, "importance": 3}


class InvalidGrid(ValueError):
    """A grid of jobs that cannot be built: an unknown grid name, a task the grid does not
    hold, or a job argument the grid fixes itself."""


@dataclass(frozen=True, slots=True)
class GridEntry:
    """One experiment of a grid: what `introspect submit` would be given for it."""

    model: str
    dataset: str
    task: str
    config: tuple[str, ...]
    split: str = PAPER_SPLIT
    seed: int = PAPER_SEED


def paper_grid(tasks: Iterable[str] | None = None) -> list[GridEntry]:
    """The paper's experiments, for `tasks` (all five when None), in the scripts' order:
    task, then model, dataset and prompt variant, as each script's loops nest."""
    chosen = list(TASK_KINDS) if tasks is None else list(dict.fromkeys(tasks))
    for task in chosen:
        if task not in PAPER_VARIANTS:
            raise InvalidGrid(f"the paper's grid has no task {task!r}; its tasks are {', '.join(PAPER_VARIANTS)}")
    return [
        GridEntry(model, dataset, task, variant)
        for task in chosen
        for model in PAPER_MODELS
        for dataset in PAPER_DATASETS
        for variant in PAPER_VARIANTS[task]
        if model == VARIANTS_MODEL or not variant
    ]


def grid(name: str, tasks: Sequence[str] | None = None) -> list[GridEntry]:
    """The grid called `name` (`paper` is the one there is), for `tasks`."""
    if name != "paper":
        raise InvalidGrid(f"unknown grid {name!r}; known: {', '.join(GRID_NAMES)}")
    return paper_grid(tasks)


def estimate_generations(
    entries: Iterable[GridEntry], limit: int | None = None, start: int = 0, stop: int | None = None
) -> int:
    """At most how many generations the experiments ask for: each one's observations (its
    test split's rows, cut as a job cuts them: the first `limit`, then `start:stop`) times
    its task's questions. A rejected question ends an observation early, and answers the
    cache holds cost nothing, so a real run asks a server for fewer."""
    total = 0
    for entry in entries:
        rows = TEST_ROWS[entry.dataset]
        observations = len(range(rows if limit is None else min(rows, limit))[start:stop])
        total += observations * QUESTIONS[entry.task]
    return total


def summary(name: str, entries: Sequence[GridEntry], limit: int | None, start: int, stop: int | None) -> str:
    """The line `submit --grid` prints before it submits."""
    generations = estimate_generations(entries, limit, start, stop)
    return f"grid {name}: {len(entries)} jobs, about {generations:,} generations (at most; cached answers cost none)"
