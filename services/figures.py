"""The paper's figures and its compute table, drawn from a results folder.

The original code base draws its figures with one script per figure (`export/*.py` of
AndreasMadsen/llm-introspection, run by `batch_export/create_plots.sh`). Each script picks
result files by their `args`, tags each with what the figure shows (model family and size,
persona, redaction instruction, counterfactual target) and plots a proportion of its
`results`. Here each figure is a pure function from the loaded results to the DataFrame it
plots, with the same choices and, new, each proportion's n and 95% Wilson interval (drawn
as error bars); drawing is separate and imports plotnine only when it draws.

Choices beyond the original's, each to make one result per plotted cell: the seed is the
paper grid's (0); a model-size figure takes each model's default system message (the one the
paper's grid ran: none for Llama 2 and Mistral, the default for Falcon); a prompt figure
takes the prompt variants the paper ran (`grid.PAPER_VARIANTS`), for llama2-70b without a
system message as the paper did, or, in a folder without it, the model with the most
variants; and of several result files of one experiment (a result of other conditions
written beside it) the one from a model rather than the stand-in, then the experiment's own
file, then the latest.
"""

from __future__ import annotations

import csv
import functools
import json
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .compare import CompareError, load_folder
from .core.chat import PAPER_SYSTEM_MESSAGE, UnknownModel, resolve_model
from .core.results import ExperimentSpec, summary
from .core.stats import proportion
from .grid import PAPER_DATASETS, PAPER_MODELS, PAPER_SEED, PAPER_SPLIT, PAPER_VARIANTS

if TYPE_CHECKING:
    import pandas as pd

# A paper column (ACL's is 3.3 in; the original drew at 3.03 in); heights are the original's.
WIDTH_IN = 3.4
PNG_DPI = 300
EXPLAIN_TASKS = ("counterfactual", "importance", "redacted")  # the faceted order: sorted, as plotnine did
COMPUTE_TASKS = ("classify", "counterfactual", "redacted", "importance")

# The original's labels (`introspect/plot/annotation.py`).
FAMILY_LABELS = {"falcon": "Falcon", "llama2": "Llama 2", "mistral-v1": "Mistral v0.1"}
TASK_LABELS = {"counterfactual": "Counterfact", "redacted": "Redaction", "importance": "Feature",
               "classify": "Classify", "answerable": "Answerable"}  # fmt: skip
PERSONA_LABELS = {"human": "Human", "you": "You", "objective": "Objective"}
REDACT_LABELS = {"no-redact": "None", "redacted": '"redacted"', "removed": '"removed"'}
TARGET_LABELS = {"explicit": "Explicit\ntarget", "implicit": "Implicit\ntarget"}
LENGTH_LABELS = {"short": "Short variation", "long": "Long variation"}
OPTIONS_LABELS = {"options": "Choices given", "no-options": "No choices given"}
STAND_IN_CAPTION = "answers from the stand-in, not a language model"


@dataclass(frozen=True)
class Result:
    """One result file: what a figure needs of it."""

    name: str  # the file's name without .json (compare.Experiment.name)
    spec: ExperimentSpec
    results: dict[str, Any]
    durations: dict[str, Any]
    answers: str  # "stand-in", the model id the server reported, or "" (no provenance)


@dataclass(frozen=True)
class FigureFile:
    name: str
    title: str
    png: Path
    pdf: Path
    data: pd.DataFrame  # the numbers it plots, one row per bar or point


@dataclass(frozen=True)
class TableFile:
    name: str
    title: str
    csv: Path
    markdown: Path
    latex: Path
    data: pd.DataFrame


# -- loading --


def load_results(folder: Path) -> tuple[list[Result], list[str]]:
    """The results of a folder, one per experiment, and a note for each file set aside."""
    experiments, notes = load_folder(folder)  # the same files and names as `introspect compare`
    loaded = [Result(e.name, e.spec, e.results, _durations(folder / f"{e.name}.json"), e.answers) for e in experiments]
    chosen: dict[str, Result] = {}
    for result in sorted(loaded, key=_preference):
        chosen[result.spec.experiment_id] = result  # the most preferred comes last
    for result in loaded:
        kept = chosen[result.spec.experiment_id]
        if kept is not result:
            notes.append(f"{result.name}: not in the figures, which show {kept.name} for this experiment")
    return sorted(chosen.values(), key=lambda result: result.name), notes


def _preference(result: Result) -> tuple[bool, bool, str]:
    """A model's answers over the stand-in's, the experiment's own file over one beside it,
    then the latest (beside files end in their submission time)."""
    return (result.answers != "stand-in", result.name == result.spec.experiment_id, result.name)


def _durations(path: Path) -> dict[str, Any]:
    durations = json.loads(path.read_text(encoding="utf-8")).get("durations")
    return durations if isinstance(durations, dict) else {}


# -- the original's tags (`introspect/plot/tagger.py`) --

_SIZED_MODEL = re.compile(r"([a-z0-9-]+)-([1-9][0-9]*)b$", re.IGNORECASE)


def family_and_size(model: str) -> tuple[str, int] | None:
    """("llama2", 70) of "llama2-70b"; None for a model without a size in its name."""
    match = _SIZED_MODEL.match(model)
    return (match.group(1), int(match.group(2))) if match else None


def classify_persona(config: Iterable[str]) -> str:
    options = set(config)
    return "human" if "c-persona-human" in options else "you" if "c-persona-you" in options else "objective"


def classify_redact(config: Iterable[str]) -> str:
    options = set(config)
    return "no-redact" if "c-no-redacted" in options else "removed" if "m-removed" in options else "redacted"


def explain_persona(config: Iterable[str]) -> str | None:
    """The persona of both the classification and the explanation prompt; None when they differ."""
    options = set(config)
    if {"c-persona-human", "e-persona-human"} <= options:
        return "human"
    if {"c-persona-you", "e-persona-you"} <= options:
        return "you"
    if not options & {"c-persona-human", "e-persona-human", "c-persona-you", "e-persona-you"}:
        return "objective"
    return None


def _persona_of(config: Iterable[str], prefix: str) -> str:
    """The persona of one prompt (`e-`, `i-`), as the class-distribution scripts tag it."""
    options = set(config)
    personas = {f"{prefix}-persona-human": "human", f"{prefix}-persona-you": "you"}
    return next((persona for option, persona in personas.items() if option in options), "objective")


def counterfactual_target(config: Iterable[str]) -> str:
    return "implicit" if "e-implcit-target" in set(config) else "explicit"


# -- selections --


def _default_system(model: str) -> str | None:
    try:
        return PAPER_SYSTEM_MESSAGE[resolve_model(model).format.name].id_part
    except (UnknownModel, KeyError):
        return None


def _paper_run(spec: ExperimentSpec) -> bool:
    """A paper dataset's test split, seed 0: the experiments of the paper's grid."""
    return spec.dataset in PAPER_DATASETS and spec.split == PAPER_SPLIT and spec.seed == PAPER_SEED


def _by_model(results: Sequence[Result], tasks: Sequence[str]) -> list[Result]:
    """The default prompt of each paper model, with its default system message."""
    return [r for r in results
            if _paper_run(r.spec) and r.spec.task in tasks and not r.spec.config and r.spec.model in PAPER_MODELS
            and r.spec.system_message == _default_system(r.spec.model)]  # fmt: skip


def _paper_variant(spec: ExperimentSpec) -> bool:
    return frozenset(spec.config) in {frozenset(v) for v in PAPER_VARIANTS.get(spec.task, ())}


def prompt_model(results: Sequence[Result], tasks: Sequence[str]) -> tuple[str, str] | None:
    """(model, system message) of the prompt figures: llama2-70b without a system message,
    the paper's, when the folder has it; otherwise the one with the most prompt variants
    (at least two: one variant is no comparison of prompts)."""
    variants: dict[tuple[str, str], set[frozenset[str]]] = {}
    for result in results:
        if _paper_run(result.spec) and result.spec.task in tasks and _paper_variant(result.spec):
            variants.setdefault((result.spec.model, result.spec.system_message), set()).add(
                frozenset((result.spec.task, *result.spec.config))
            )
    if ("llama2-70b", "none") in variants:
        return ("llama2-70b", "none")
    ranked = sorted(variants.items(), key=lambda item: (-len(item[1]), item[0]))
    return ranked[0][0] if ranked and len(ranked[0][1]) > 1 else None


def _proportion_columns(successes: int, n: int) -> dict[str, Any]:
    interval = proportion(successes, n)
    return {"successes": successes, "n": n, "value": interval.value, "low": interval.low, "high": interval.high}


def _measure(result: Result, measure: str) -> tuple[int, int]:
    counted = summary(result.results)[measure]
    return counted.numerator, counted.denominator


def _frame(rows: list[dict[str, Any]], columns: Sequence[str]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(rows, columns=list(columns))


_PROPORTION = ("successes", "n", "value", "low", "high")
_SOURCE = ("result", "answers")


def _model_size_rows(results: Sequence[Result], tasks: Sequence[str], measure: str) -> pd.DataFrame:
    rows = []
    for result in _by_model(results, tasks):
        family, size = family_and_size(result.spec.model) or ("", 0)
        successes, n = _measure(result, measure)
        if n:  # no observation to take a share of (faithfulness with nothing correct): no point
            rows.append({"dataset": result.spec.dataset, "task": result.spec.task, "model": result.spec.model,
                         "family": family, "size": size, **_proportion_columns(successes, n),
                         "result": result.name, "answers": result.answers})  # fmt: skip
    columns = ("dataset", "task", "model", "family", "size", *_PROPORTION, *_SOURCE)
    return _frame(rows, columns).sort_values(["dataset", "task", "family", "size"], ignore_index=True)


def faithfulness_by_model_size(results: Sequence[Result]) -> pd.DataFrame:
    """`plot_explain_f-task_y-faithfulness_x-model.py`: faithful_and_correct / correct of the
    three explanation tasks' default prompt, per paper model, dataset and task."""
    return _model_size_rows(results, EXPLAIN_TASKS, "faithfulness")


def accuracy_by_model_size(results: Sequence[Result]) -> pd.DataFrame:
    """`plot_classify_y-accuracy_x-model.py`: correct / (total - missmatch) of classify's
    default prompt, per paper model and dataset."""
    return _model_size_rows(results, ("classify",), "accuracy")


def faithfulness_by_prompt(results: Sequence[Result], model: tuple[str, str] | None = None) -> pd.DataFrame:
    """`plot_explain_f-task_y-faithfulness_x-prompt.py`: each explanation task's faithfulness
    per prompt variant of one model: the persona of both prompts (bars), and for
    counterfactuals the explicit or implicit target, for redaction and importance the
    redaction instruction (x)."""
    chosen = model or prompt_model(results, EXPLAIN_TASKS)
    rows = []
    for result in _prompt_results(results, EXPLAIN_TASKS, chosen):
        config = result.spec.config
        persona = explain_persona(config)
        variant = counterfactual_target(config) if result.spec.task == "counterfactual" else classify_redact(config)
        successes, n = _measure(result, "faithfulness")
        if persona is not None and n:
            rows.append({"dataset": result.spec.dataset, "task": result.spec.task, "variant": variant,
                         "persona": persona, "options": ",".join(sorted(config)), "model": result.spec.model,
                         **_proportion_columns(successes, n), "result": result.name,
                         "answers": result.answers})  # fmt: skip
    columns = ("dataset", "task", "variant", "persona", "options", "model", *_PROPORTION, *_SOURCE)
    return _frame(rows, columns).sort_values(["dataset", "task", "variant", "persona"], ignore_index=True)


def accuracy_by_prompt(results: Sequence[Result], model: tuple[str, str] | None = None) -> pd.DataFrame:
    """`plot_classify_y-accuracy_x-prompt.py`: classify's accuracy per prompt variant of one
    model: the redaction instruction (x) and the persona (bars)."""
    chosen = model or prompt_model(results, ("classify",))
    rows = []
    for result in _prompt_results(results, ("classify",), chosen):
        successes, n = _measure(result, "accuracy")
        if n:
            config = result.spec.config
            rows.append({"dataset": result.spec.dataset, "task": "classify", "variant": classify_redact(config),
                         "persona": classify_persona(config), "options": ",".join(sorted(config)),
                         "model": result.spec.model, **_proportion_columns(successes, n),
                         "result": result.name, "answers": result.answers})  # fmt: skip
    columns = ("dataset", "task", "variant", "persona", "options", "model", *_PROPORTION, *_SOURCE)
    return _frame(rows, columns).sort_values(["dataset", "variant", "persona"], ignore_index=True)


def _prompt_results(results: Sequence[Result], tasks: Sequence[str], model: tuple[str, str] | None) -> list[Result]:
    if model is None:
        return []
    return [r for r in results
            if _paper_run(r.spec) and r.spec.task in tasks and _paper_variant(r.spec)
            and (r.spec.model, r.spec.system_message) == model]  # fmt: skip


# The class-distribution scripts (`plot_<task>_y-classes_x-prompt.py`): per task, the facet
# row and column each experiment is tagged with, and the count table's column that fills
# the bars (x is always the predicted class).
@dataclass(frozen=True)
class _ClassesLayout:
    row: Callable[[Sequence[str]], str]
    column: Callable[[Sequence[str]], str] | None
    column_labels: dict[str, str]
    fill: str
    fill_title: str


def _options_given(config: Sequence[str]) -> str:
    # `i-options` lists the possible answers in the question (the original's tag reads it the
    # other way round, against its own prompt)
    return "options" if "i-options" in config else "no-options"


def _prompt_length(config: Sequence[str]) -> str:
    return "short" if "e-short" in config else "long"


_CLASSES: dict[str, _ClassesLayout] = {
    "classify": _ClassesLayout(classify_persona, classify_redact, REDACT_LABELS, "label", "True class"),
    "answerable": _ClassesLayout(functools.partial(_persona_of, prefix="i"), _options_given, OPTIONS_LABELS,
                                 "ability", "Answer to answerable question"),
    "counterfactual": _ClassesLayout(functools.partial(_persona_of, prefix="e"), counterfactual_target,
                                     TARGET_LABELS, "explain_predict", "Class predicted of the explanation"),
    "redacted": _ClassesLayout(functools.partial(_persona_of, prefix="e"), _prompt_length, LENGTH_LABELS,
                               "explain_predict", "Class predicted of the explanation"),
    "importance": _ClassesLayout(functools.partial(_persona_of, prefix="e"), None, {},
                                 "explain_predict", "Class predicted of the explanation"),
}  # fmt: skip


def class_distribution(results: Sequence[Result], task: str, dataset: str, model: tuple[str, str]) -> pd.DataFrame:
    """The answers' count table of one task on one dataset for one model: how often each
    class was predicted (x), split by the true class, the class predicted of the
    explanation, or the answer to "can you answer", per persona (rows) and prompt variation
    (columns). Counts of experiments with the same tags are summed, as the original did."""
    layout = _CLASSES[task]
    counts: dict[tuple[str, str, str, str], int] = {}
    sources: dict[tuple[str, str, str, str], list[Result]] = {}
    for result in results:
        spec = result.spec
        if (spec.task, spec.dataset, spec.split, spec.seed) != (task, dataset, PAPER_SPLIT, PAPER_SEED):
            continue
        if (spec.model, spec.system_message) != model:
            continue
        row = layout.row(spec.config)
        column = layout.column(spec.config) if layout.column else ""
        for entry in result.results.get("answer", []):
            key = (row, column, _class_name(entry.get("predict")), _class_name(entry.get(layout.fill)))
            counts[key] = counts.get(key, 0) + int(entry["count"])
            if result not in sources.setdefault(key, []):
                sources[key].append(result)
    rows = [{"persona": row, "variant": column, "predict": predict, "fill": fill, "count": count,
             "results": " ".join(r.name for r in sources[key]),
             "answers": " ".join(sorted({r.answers for r in sources[key]}))}
            for key, count in sorted(counts.items()) for row, column, predict, fill in [key]]  # fmt: skip
    return _frame(rows, ("persona", "variant", "predict", "fill", "count", "results", "answers"))


def _class_name(value: Any) -> str:
    return "none" if value is None else str(value)


def compute_table(results: Sequence[Result]) -> pd.DataFrame:
    """`latex_compute.py`: the inference time of the default prompt per dataset, paper model
    and task (classify and the three explanations), from `durations.eval`. Since
    provenance, that counts only generations the model server computed for the run (an
    answer from the cache costs 0; an OpenAI-compatible server reports none): a re-run's
    time is not the experiment's cost. `answers` says where each result's answers came from."""
    rows = []
    for result in _by_model(results, COMPUTE_TASKS):
        family, size = family_and_size(result.spec.model) or ("", 0)
        seconds = float(result.durations.get("eval") or 0.0)
        rows.append({"dataset": result.spec.dataset, "model": result.spec.model, "family": family, "size": size,
                     "task": result.spec.task, "eval_seconds": seconds, "hours": seconds / 3600,
                     "hh_mm": hours_minutes(seconds), "result": result.name, "answers": result.answers})  # fmt: skip
    columns = ("dataset", "model", "family", "size", "task", "eval_seconds", "hours", "hh_mm", "result", "answers")
    frame = _frame(rows, columns)
    # The original's order: its datasets and models as listed (models grouped by family), tasks as columns
    order = {"dataset": PAPER_DATASETS.index, "model": PAPER_MODELS.index, "task": COMPUTE_TASKS.index}
    return frame.sort_values(["dataset", "model", "task"], key=lambda column: column.map(order[column.name]),
                             ignore_index=True)  # fmt: skip


def hours_minutes(seconds: float) -> str:
    """`01:05`: whole hours and minutes, the original's `tex_format_time`."""
    hours, minutes = divmod(int(seconds // 60), 60)
    return f"{hours:02d}:{minutes:02d}"


# -- drawing --


@dataclass(frozen=True)
class _Figure:
    name: str
    title: str
    data: pd.DataFrame
    draw: Callable[[pd.DataFrame], Any]  # the data -> a plotnine ggplot
    height_in: float


def paper_figures(results_dir: Path, out_dir: Path) -> list[FigureFile]:
    """Every figure the folder has data for, written to `out_dir` as `<name>.pdf` and
    `<name>.png`; a figure without data is left out."""
    results = _load_or_nothing(results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for figure in figures_of(results):
        pdf, png = out_dir / f"{figure.name}.pdf", out_dir / f"{figure.name}.png"
        plot = figure.draw(figure.data)
        if figure.data["answers"].str.contains("stand-in").any():
            plot = _with_caption(plot, STAND_IN_CAPTION)
        with warnings.catch_warnings():
            # a model family with one size in a facet is a point without a line, as intended
            warnings.filterwarnings("ignore", message="geom_path: Each group consist of only one observation")
            plot.save(pdf, width=WIDTH_IN, height=figure.height_in, units="in", verbose=False)
            plot.save(png, width=WIDTH_IN, height=figure.height_in, units="in", dpi=PNG_DPI, verbose=False)
        files.append(FigureFile(figure.name, figure.title, png, pdf, figure.data))
    return files


def paper_tables(results_dir: Path, out_dir: Path) -> list[TableFile]:
    """The compute table as `compute.csv` (one row per result, hours as a number),
    `compute.md` and `compute.tex` (the original's layout); nothing without data."""
    data = compute_table(_load_or_nothing(results_dir))
    if data.empty:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = out_dir / "compute.csv", out_dir / "compute.md", out_dir / "compute.tex"
    with paths[0].open("w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(data.columns)
        writer.writerows(data.itertuples(index=False))
    paths[1].write_text(compute_markdown(data), encoding="utf-8")
    paths[2].write_text(compute_latex(data), encoding="utf-8")
    title = "Inference time [hh:mm] per dataset, model and task (generations the server computed)"
    return [TableFile("compute", title, *paths, data)]


def _load_or_nothing(results_dir: Path) -> list[Result]:
    if not results_dir.is_dir():
        raise CompareError(f"{results_dir} is not a folder")
    try:
        return load_results(results_dir)[0]
    except CompareError:  # a folder without result files: nothing to draw
        return []


def figures_of(results: Sequence[Result]) -> list[_Figure]:
    """The figures the results have data for, with their data; nothing drawn yet."""
    figures = [
        _Figure("faithfulness-by-model-size", "Faithfulness against model size, by dataset and explanation",
                faithfulness_by_model_size(results), _draw_faithfulness_by_model_size, 3.5),
        _Figure("accuracy-by-model-size", "Classification accuracy against model size, by dataset",
                accuracy_by_model_size(results), _draw_accuracy_by_model_size, 2.0),
    ]  # fmt: skip
    explain_model = prompt_model(results, EXPLAIN_TASKS)
    if explain_model:
        title = f"Faithfulness against prompt variant ({_named(explain_model)})"
        data = faithfulness_by_prompt(results, explain_model)
        figures.append(_Figure("faithfulness-by-prompt", title, data, _draw_faithfulness_by_prompt, 4.0))
    classify_model = prompt_model(results, ("classify",))
    if classify_model:
        figures.append(_Figure("accuracy-by-prompt", f"Classification accuracy against prompt variant "
                               f"({_named(classify_model)})", accuracy_by_prompt(results, classify_model),
                               _draw_accuracy_by_prompt, 2.5))  # fmt: skip
    for task in _CLASSES:
        model = prompt_model(results, (task,)) or _most_results_model(results, task)
        for dataset in PAPER_DATASETS if model else ():
            assert model is not None
            data = class_distribution(results, task, dataset, model)
            heading = f"{dataset} - {TASK_LABELS[task]}"
            draw = functools.partial(_draw_classes, task=task, title=heading)
            height = 4.5 if _CLASSES[task].column else 3.5
            title = f"{heading}: predicted classes ({_named(model)})"
            figures.append(_Figure(f"classes-{task}-{dataset.lower()}", title, data, draw, height))
    return [figure for figure in figures if not figure.data.empty]


def _most_results_model(results: Sequence[Result], task: str) -> tuple[str, str] | None:
    """The class diagnostics of a folder whose model has only the default prompt of `task`:
    llama2-70b's if there, else the model with the most results of the task."""
    counts: dict[tuple[str, str], int] = {}
    for result in results:
        if result.spec.task == task and _paper_run(result.spec):
            key = (result.spec.model, result.spec.system_message)
            counts[key] = counts.get(key, 0) + 1
    if ("llama2-70b", "none") in counts:
        return ("llama2-70b", "none")
    return min(counts, key=lambda key: (-counts[key], key)) if counts else None


def _named(model: tuple[str, str]) -> str:
    return f"{model[0]}, system message {model[1]}"


def _plotnine() -> Any:
    """plotnine, drawing without a display (imported here: the services must not pay for it)."""
    import matplotlib

    matplotlib.use("Agg")
    import plotnine

    return plotnine


@functools.cache
def _serif() -> str:
    """Times New Roman as the original, or a font metrically equal to it."""
    from matplotlib import font_manager

    installed = {font.name for font in font_manager.fontManager.ttflist}
    return next((name for name in ("Times New Roman", "Liberation Serif", "Nimbus Roman") if name in installed),
                "serif")  # fmt: skip


def _paper_theme(p9: Any, legend_columns: int, aesthetic: str, **more: Any) -> Any:
    """The original's paper format: 10 pt serif, the legend below on grey."""
    return [
        p9.guides(**{aesthetic: p9.guide_legend(ncol=legend_columns)}),
        p9.theme(
            text=p9.element_text(size=9, family=_serif()),
            legend_box_margin=0,
            legend_position="bottom",
            legend_title_position="top",  # the legend's title above its keys: 3.4 in holds three keys
            legend_background=p9.element_rect(fill="#F2F2F2"),
            **more,
        ),
    ]


def _percent(ticks: Sequence[float]) -> list[str]:
    return [f"{tick:.0%}" for tick in ticks]


def _labeller(labels: dict[str, str]) -> Callable[[str], str]:
    return lambda value: labels.get(value, value)


def _ordered(data: pd.DataFrame, column: str, order: Sequence[str]) -> pd.DataFrame:
    """`column` as a category in `order` (then any other value, sorted): plotnine's order."""
    import pandas as pd

    present = list(dict.fromkeys([*[v for v in order if v in set(data[column])], *sorted(set(data[column]))]))
    return data.assign(**{column: pd.Categorical(data[column], categories=present)})


def _model_size_plot(data: pd.DataFrame, y_title: str) -> Any:
    p9 = _plotnine()
    dodge = p9.position_dodge(width=8)  # the three 7B models share x: set side by side
    data = _ordered(data, "dataset", sorted(PAPER_DATASETS))  # the original's (plotnine's) order
    return (
        p9.ggplot(data, p9.aes(x="size", y="value", color="family", group="family"))
        + p9.geom_line(position=dodge)
        + p9.geom_point(position=dodge, size=1.2)
        + p9.geom_errorbar(p9.aes(ymin="low", ymax="high"), position=dodge, width=5, size=0.4)
        + p9.scale_y_continuous(name=y_title, labels=_percent, limits=[0, 1])
        + p9.scale_x_continuous(name="Model size [B]", limits=[-10, 80], breaks=[7, 40, 70])
        + p9.scale_color_discrete(breaks=list(FAMILY_LABELS), labels=list(FAMILY_LABELS.values()), name="Model type")
    )


def _draw_faithfulness_by_model_size(data: pd.DataFrame) -> Any:
    p9 = _plotnine()
    data = _ordered(data, "task", EXPLAIN_TASKS)
    plot = _model_size_plot(data, "Faithfulness") + p9.facet_grid("dataset ~ task", labeller=_labeller(TASK_LABELS))
    return plot + _paper_theme(p9, 3, "color")


def _draw_accuracy_by_model_size(data: pd.DataFrame) -> Any:
    p9 = _plotnine()
    plot = _model_size_plot(data, "Accuracy") + p9.facet_wrap("dataset", nrow=1)
    return plot + _paper_theme(p9, 3, "color")


def _prompt_plot(data: pd.DataFrame, y_title: str, x_title: str, x_labels: dict[str, str]) -> Any:
    p9 = _plotnine()
    dodge = p9.position_dodge(width=0.9)
    data = _ordered(_ordered(data, "persona", list(PERSONA_LABELS)), "variant", list(x_labels))
    return (
        p9.ggplot(data, p9.aes(x="variant", y="value", fill="persona"))
        + p9.geom_col(position=dodge)
        + p9.geom_errorbar(p9.aes(ymin="low", ymax="high"), position=dodge, width=0.3, size=0.4)
        + p9.scale_y_continuous(name=y_title, labels=_percent, limits=[0, 1])
        + p9.scale_x_discrete(name=x_title, labels=lambda breaks: [x_labels.get(b, b) for b in breaks])
        + p9.scale_fill_discrete(
            breaks=list(PERSONA_LABELS), labels=list(PERSONA_LABELS.values()), name="Persona instruction"
        )
    )


def _draw_faithfulness_by_prompt(data: pd.DataFrame) -> Any:
    p9 = _plotnine()
    data = _ordered(_ordered(data, "task", EXPLAIN_TASKS), "dataset", sorted(PAPER_DATASETS))
    plot = _prompt_plot(data, "Faithfulness", "Explanation dependent prompt variation", REDACT_LABELS | TARGET_LABELS)
    plot += p9.facet_grid("dataset ~ task", scales="free_x", labeller=_labeller(TASK_LABELS))
    return plot + _paper_theme(p9, 3, "fill", axis_text_x=p9.element_text(angle=60))


def _draw_accuracy_by_prompt(data: pd.DataFrame) -> Any:
    p9 = _plotnine()
    data = _ordered(data, "dataset", sorted(PAPER_DATASETS))
    plot = _prompt_plot(data, "Accuracy", "Redaction instruction", REDACT_LABELS) + p9.facet_wrap("dataset", nrow=1)
    return plot + _paper_theme(p9, 3, "fill", axis_text_x=p9.element_text(angle=60, hjust=1))


def _draw_classes(data: pd.DataFrame, task: str, title: str) -> Any:
    p9 = _plotnine()
    layout = _CLASSES[task]
    data = _ordered(_ordered(data, "persona", list(PERSONA_LABELS)), "variant", list(layout.column_labels))
    facets = "persona ~ variant" if layout.column else "persona ~ ."
    return (
        p9.ggplot(data, p9.aes(x="predict", y="count", fill="fill"))
        + p9.geom_col()
        + p9.facet_grid(facets, labeller=_labeller(PERSONA_LABELS | layout.column_labels))
        + p9.scale_y_continuous(name="Count")
        + p9.scale_x_discrete(name="Predicted class")
        + p9.scale_fill_discrete(name=layout.fill_title)
        + p9.ggtitle(title)
        + _paper_theme(p9, 2, "fill", axis_text_x=p9.element_text(angle=60, hjust=1))
    )


def _with_caption(plot: Any, caption: str) -> Any:
    p9 = _plotnine()
    return plot + p9.labs(caption=caption) + p9.theme(plot_caption=p9.element_text(size=7))


# -- the compute table's text forms --


def _compute_cells(data: pd.DataFrame) -> list[tuple[str, str, int, list[str]]]:
    """(dataset, family, size, [hh:mm per task in COMPUTE_TASKS, "–" where missing])."""
    cells = []
    for (dataset, family, size), group in data.groupby(["dataset", "family", "size"], sort=False):
        by_task = dict(zip(group["task"], group["hh_mm"], strict=True))
        cells.append((str(dataset), str(family), int(size), [by_task.get(task, "–") for task in COMPUTE_TASKS]))
    return cells


def compute_markdown(data: pd.DataFrame) -> str:
    header = ["Dataset", "Model", "Size", *(TASK_LABELS[task] for task in COMPUTE_TASKS)]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for dataset, family, size, times in _compute_cells(data):
        lines.append(f"| {dataset} | {FAMILY_LABELS.get(family, family)} | {size}B | " + " | ".join(times) + " |")
    return "\n".join(lines) + "\n\nInference time [hh:mm] of the generations the model server computed.\n"


def compute_latex(data: pd.DataFrame) -> str:
    """The original's booktabs table, with its columns labelled in the order they are filled
    (the original's header named the last two the other way round)."""
    cells = _compute_cells(data)
    lines = [r"\begin{tabular}[t]{lllcccc}", r"\toprule",
             r"Dataset & Model & Size & \multicolumn{4}{c}{Inference time [hh:mm]} \\", r"\cmidrule(r){4-7}",
             "& & & " + " & ".join(TASK_LABELS[task] for task in COMPUTE_TASKS) + r" \\", r"\midrule"]  # fmt: skip
    for i, (dataset, family, size, times) in enumerate(cells):
        first_of_dataset = i == 0 or cells[i - 1][0] != dataset
        first_of_family = first_of_dataset or cells[i - 1][1] != family
        if first_of_dataset and i > 0:
            lines.append(r"\cmidrule{2-7}")
        elif first_of_family and i > 0:
            lines.append(r"\cmidrule{3-7}")
        dataset_rows = sum(1 for cell in cells if cell[0] == dataset)
        family_rows = sum(1 for cell in cells if cell[:2] == (dataset, family))
        dataset_tex = rf"\multirow{{{dataset_rows}}}{{*}}{{{_tex(dataset)}}}" if first_of_dataset else ""
        family_name = _tex(FAMILY_LABELS.get(family, family))
        family_tex = rf"\multirow{{{family_rows}}}{{*}}{{{family_name}}}" if first_of_family else ""
        lines.append(f"{dataset_tex} & {family_tex} & {size}B & " + " & ".join(times) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines).replace("–", "--") + "\n"


def _tex(text: str) -> str:
    return re.sub(r"([&%$#_{}])", r"\\\1", text)
