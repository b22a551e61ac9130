"""`services.grid`: the paper's experiment set equals what the original's job scripts submit.

The lines below are copied from AndreasMadsen/llm-introspection at be801d9 ("fix issues and
use singularity"), `git show HEAD:jobs/<task>.sh`; each script runs

    for model_name in <MODELS>; for dataset in <DATASETS>; for task_config in <VARIANTS>
        if [[ $model_name != 'llama2-70b' && $task_config != '' ]]; then continue
        experiments/analysis.py --task <task> --task-config $task_config --model-name ...
            --dataset ... --split 'test' --seed 0

and the expected set is built here from those lines alone, not from `services.grid`.
"""

from __future__ import annotations

import shlex

import pytest

from services.core.config import TaskConfig
from services.core.tasks import Task
from services.grid import (
    QUESTIONS,
    TEST_ROWS,
    GridEntry,
    InvalidGrid,
    estimate_generations,
    grid,
    paper_grid,
)

# `for model_name in ...` and `for dataset in ...`: the same two lines in all five scripts.
SCRIPT_MODELS = "'llama2-70b' 'llama2-7b' 'falcon-40b' 'falcon-7b' 'mistral-v1-7b'"
SCRIPT_DATASETS = "'IMDB' 'RTE' 'bAbI-1' 'MCTest'"
# `for task_config in ...`, script by script.
SCRIPT_VARIANTS = {
    "jobs/classify.sh": (
        "classify",
        "'' 'c-persona-you' 'c-persona-human' 'm-removed' 'm-removed c-persona-you' 'm-removed c-persona-human' "
        "'c-no-redacted' 'c-no-redacted c-persona-you' 'c-no-redacted c-persona-human'",
    ),
    "jobs/answerable.sh": (
        "answerable",
        "'' 'c-persona-you i-persona-you' 'c-persona-human i-persona-human' 'i-options' "
        "'i-options c-persona-you i-persona-you' 'i-options c-persona-human i-persona-human'",
    ),
    "jobs/counterfactual.sh": (
        "counterfactual",
        "'' 'c-persona-you e-persona-you' 'c-persona-human e-persona-human' 'e-implcit-target' "
        "'e-implcit-target c-persona-you e-persona-you' 'e-implcit-target c-persona-human e-persona-human'",
    ),
    "jobs/redacted.sh": (
        "redacted",
        "'' 'c-persona-you e-persona-you' 'c-persona-human e-persona-human' 'm-removed' "
        "'m-removed c-persona-you e-persona-you' 'm-removed c-persona-human e-persona-human'",
    ),
    "jobs/importance.sh": (
        "importance",
        "'' 'c-persona-you e-persona-you' 'c-persona-human e-persona-human' 'm-removed' "
        "'m-removed c-persona-you e-persona-you' 'm-removed c-persona-human e-persona-human'",
    ),
}


def _scripts_set(task: str | None = None) -> set[tuple[str, str, str, frozenset[str], str, int]]:
    """(model, dataset, task, options, split, seed) for every job the scripts submit."""
    jobs = set()
    for _path, (script_task, variants) in SCRIPT_VARIANTS.items():
        if task is not None and script_task != task:
            continue
        for model in shlex.split(SCRIPT_MODELS):
            for dataset in shlex.split(SCRIPT_DATASETS):
                for task_config in shlex.split(variants):
                    if model != "llama2-70b" and task_config != "":
                        continue
                    jobs.add((model, dataset, script_task, frozenset(task_config.split()), "test", 0))
    return jobs


def _as_set(entries: list[GridEntry]) -> set[tuple[str, str, str, frozenset[str], str, int]]:
    return {(e.model, e.dataset, e.task, frozenset(e.config), e.split, e.seed) for e in entries}


def test_the_paper_grid_is_the_set_the_original_job_scripts_submit() -> None:
    entries = paper_grid()
    assert _as_set(entries) == _scripts_set()
    assert len(entries) == len(_scripts_set()) == 212  # no experiment twice
    # classify: 9 variants for llama2-70b x 4 datasets, plus 4 models x 4 datasets; the rest 6 variants.
    assert sum(e.task == "classify" for e in entries) == 9 * 4 + 4 * 4


@pytest.mark.parametrize("task", [task for task, _ in SCRIPT_VARIANTS.values()])
def test_one_task_of_the_grid_is_that_task_s_script(task: str) -> None:
    assert _as_set(paper_grid([task])) == _scripts_set(task)


def test_only_llama2_70b_runs_the_prompt_variants() -> None:
    assert {e.model for e in paper_grid() if e.config} == {"llama2-70b"}
    assert {e.model for e in paper_grid() if not e.config} == set(shlex.split(SCRIPT_MODELS))


def test_every_experiment_of_the_grid_is_a_valid_task() -> None:
    for entry in paper_grid():
        category = {"IMDB": "sentiment", "RTE": "entailment"}.get(entry.dataset, "multi-choice")
        Task(entry.task, category, TaskConfig.of(entry.config))  # type: ignore[arg-type]  # raises if not


def test_the_estimate_is_rows_times_questions() -> None:
    (imdb,) = [e for e in paper_grid(["counterfactual"]) if e.model == "falcon-7b" and e.dataset == "IMDB"]
    assert estimate_generations([imdb]) == 25_000 * 3
    assert estimate_generations([imdb], limit=10) == 30
    assert estimate_generations([imdb], limit=10, start=8) == 6
    assert estimate_generations([imdb], start=24_999, stop=30_000) == 3
    everything = sum(TEST_ROWS[e.dataset] * QUESTIONS[e.task] for e in paper_grid())
    assert estimate_generations(paper_grid()) == everything == 3_305_871


def test_unknown_grids_and_tasks_are_refused_by_name() -> None:
    with pytest.raises(InvalidGrid, match="unknown grid 'big'"):
        grid("big")
    with pytest.raises(InvalidGrid, match="no task 'summarise'"):
        grid("paper", ["summarise"])
    assert grid("paper", ["classify", "classify"]) == paper_grid(["classify"])


# -- `introspect submit --grid paper`, as a user types it --


def test_submit_grid_dry_run_prints_the_jobs_and_the_estimate_and_submits_nothing(capsys) -> None:
    from services.cli.commands import main

    # No NATS is running at this address: a dry run never connects.
    argv = ["submit", "--grid", "paper", "--dry-run", "--nats", "nats://127.0.0.1:9"]
    assert main(argv) == 0
    out = capsys.readouterr()
    assert "grid paper: 212 jobs, about 3,305,871 generations" in out.err
    assert "dry run: 212 job(s), none submitted" in out.err
    lines = out.out.splitlines()
    assert len(lines) == 212
    assert "llama2-70b IMDB classify c-no-redacted,c-persona-you" in lines
    assert "mistral-v1-7b MCTest importance none" in lines


def test_submit_grid_narrowed_to_one_task(capsys) -> None:
    from services.cli.commands import main

    assert main(["submit", "--grid", "paper", "--task", "counterfactual", "--limit", "10", "--dry-run"]) == 0
    out = capsys.readouterr()
    # 40 jobs of 10 observations (every test split has more rows), 3 questions each.
    assert "grid paper: 40 jobs, about 1,200 generations" in out.err
    assert len(out.out.splitlines()) == 40


def test_the_estimate_with_a_limit_counts_each_split_s_rows_up_to_it() -> None:
    entries = paper_grid(["counterfactual"])
    assert estimate_generations(entries, limit=10) == len(entries) * 10 * 3


@pytest.mark.parametrize(
    ("extra", "flag"),
    [(["--dataset", "IMDB"], "--dataset"), (["--model", "llama2-7b"], "--model"), (["--seed", "1"], "--seed"),
     (["--config", "m-removed"], "--config"), (["--variant", "none"], "--variant")],
)  # fmt: skip
def test_what_the_grid_fixes_cannot_be_given_beside_it(extra: list[str], flag: str, capsys) -> None:
    from services.cli.commands import main

    assert main(["submit", "--grid", "paper", "--dry-run", *extra]) == 2
    assert f"drop {flag}" in capsys.readouterr().err


def test_submit_without_a_grid_still_needs_dataset_and_task(capsys) -> None:
    from services.cli.commands import main

    assert main(["submit", "--task", "classify", "--dry-run"]) == 2
    assert "submit needs --dataset and --task, or --grid paper" in capsys.readouterr().err
    assert main(["submit", "--dataset", "IMDB", "--task", "classify", "--dry-run"]) == 0
    out = capsys.readouterr()
    assert out.out == "llama2-7b IMDB classify none\n" and "1 job(s), none submitted" in out.err
