"""`introspect compare`: one table across experiments, with paired tests between them; and
the printed form of one experiment's results (`run`, `evaluate`, `results`, `status`).

Experiments come from a results folder (`<experiment id>.json` beside its `.parquet`) or
from the aggregator's API; the statistics are `core.stats`'. The records are read only for
the experiments of a `--pair`: the paired tests need each observation's outcome.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .core.results import ExperimentSpec, InvalidExperiment
from .core.stats import PairedTest, Proportion, count_shares, holm, paired_test, summary_with_intervals
from .core.tasks import TASK_KINDS, kind_spec

FORMATS = ("table", "markdown", "csv")
_ID_LEAD = "analysis_"  # every experiment id starts so; a name may leave it out


class CompareError(ValueError):
    """What cannot be compared or found: an unknown or ambiguous name, two experiments on
    different observations, a folder without result files."""


# -- experiments, from a folder or from the aggregator --

# The outcome of one observation: (counted in accuracy, correct, judged), judged None when
# it is not counted in faithfulness (or introspection).
Outcome = tuple[bool, bool, bool | None]


@dataclass(frozen=True)
class Experiment:
    """One result file, and how to read its records when a pair needs them."""

    # The result's file name without `.json`: the experiment id, or for a result of other
    # conditions written beside it, `<experiment id>.<token>` (result_files.place_result).
    name: str
    spec: ExperimentSpec
    results: dict[str, Any]
    answers: str  # where the answers came from, by the file's provenance: "stand-in", a model id, or ""
    read_records: Callable[[], Any]  # a pyarrow Table of the records Parquet

    @property
    def experiment_id(self) -> str:
        return self.spec.experiment_id


def load_folder(folder: Path) -> tuple[list[Experiment], list[str]]:
    """The experiments of a results folder, and a note for each JSON file that is not one."""
    if not folder.is_dir():
        raise CompareError(f"{folder} is not a folder")
    experiments, notes = [], []
    for path in sorted(folder.glob("*.json")):
        if path.name.startswith("."):  # a result file being written
            continue
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            spec, results = _result_of(document)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, InvalidExperiment) as error:
            notes.append(f"{path.name}: not a result file ({error})")
            continue
        records = functools.partial(_read_parquet, path.with_suffix(".parquet"))
        experiments.append(Experiment(path.stem, spec, results, _answers(document), records))
    if not experiments:
        raise CompareError(f"no result files (<experiment id>.json) in {folder}")
    return experiments, notes


def load_aggregator(aggregator: str, token: str | None) -> tuple[list[Experiment], list[str]]:
    """The complete jobs the aggregator knows (the latest job of each result file: a job run
    again under the same conditions replaced its file), and a note saying how many are still
    running."""
    from .client import job_file, list_jobs

    every_job = list_jobs(aggregator, token)
    jobs = [job for job in every_job if job["complete"]]
    running = len(every_job) - len(jobs)
    latest: dict[str, dict[str, Any]] = {}
    for job in sorted(jobs, key=lambda job: job["job_id"]):  # job ids end in their submission time
        latest[job.get("result_file") or job["experiment_id"]] = job
    experiments = []
    for result_file, job in latest.items():
        document = json.loads(job_file(aggregator, job["job_id"], "result.json", token))
        spec, results = _result_of(document)
        records = functools.partial(_read_job_records, aggregator, job["job_id"], token)
        experiments.append(Experiment(_stem(result_file), spec, results, _answers(document), records))
    if not experiments:
        raise CompareError(f"no complete job at {aggregator}")
    return experiments, [f"{running} job(s) still running, not shown"] if running else []


def _result_of(document: Any) -> tuple[ExperimentSpec, dict[str, Any]]:
    """The experiment and its `results` from a result JSON (keys beside the paper's ignored)."""
    if not isinstance(document, dict) or not isinstance(document.get("results"), dict):
        raise InvalidExperiment("no `results` object")
    results = document["results"]
    if not all(isinstance(results.get(name), int) for name in ("correct", "missmatch", "error", "total")):
        raise InvalidExperiment("`results` lacks the paper's counts")
    args: Any = document.get("args")  # from_args says what is wrong with it
    return ExperimentSpec.from_args(args), results


def _stem(result_file: str) -> str:
    """`analysis_..._s-0` of `/results/analysis_..._s-0.json` (a job's file may be a path of
    another machine: only its last part counts)."""
    return result_file.replace("\\", "/").rsplit("/", 1)[-1].removesuffix(".json")


def _answers(document: dict[str, Any]) -> str:
    """Where a result's answers came from, said short: "stand-in", the model id the server
    reported, or "" for a file without provenance (written before it was recorded)."""
    provenance = document.get("provenance")
    if not isinstance(provenance, dict):
        return ""
    if provenance.get("stand_in"):
        return "stand-in"
    served = provenance.get("served_model_id")
    return served if isinstance(served, str) else ""


def _read_job_records(aggregator: str, job_id: str, token: str | None) -> Any:
    from .client import job_file

    return _read_parquet(io.BytesIO(job_file(aggregator, job_id, "records.parquet", token)))


def _read_parquet(source: Any) -> Any:
    import pyarrow.parquet as pq

    return pq.read_table(source)


def outcomes(task: str, records: Iterable[dict[str, Any]]) -> dict[int, Outcome]:
    """Each observation's outcome by its idx, counted as the aggregate counts it: an error is
    in accuracy's n and not correct; a missmatch (an answer not read) is in no n; faithfulness
    (or introspection) is among the correct observations."""
    judgement = kind_spec(task).judgement
    out: dict[int, Outcome] = {}
    for record in records:
        if record.get("error") is not None:
            out[record["idx"]] = (True, False, None)
            continue
        judged = None if judgement is None else record.get(judgement)
        if record.get("correct") is None or (judgement is not None and judged is None):
            out[record["idx"]] = (False, False, None)
            continue
        correct = bool(record["correct"])
        out[record["idx"]] = (True, correct, bool(judged) if correct and judgement is not None else None)
    return out


def _experiment_outcomes(experiment: Experiment) -> dict[int, Outcome]:
    judgement = kind_spec(experiment.spec.task).judgement
    columns = ["idx", "error", "correct", *([judgement] if judgement else [])]
    try:
        table = experiment.read_records()
    except FileNotFoundError:
        raise CompareError(f"{experiment.name}: no records file (.parquet) beside the result") from None
    return outcomes(experiment.spec.task, table.select(columns).to_pylist())


# -- the table of experiments --


@dataclass(frozen=True, slots=True)
class ExperimentRow:
    number: int  # the row's number, which the paired comparisons refer to
    name: str  # the result file's name (Experiment.name)
    experiment_id: str
    model: str
    answers: str
    system_message: str
    dataset: str
    split: str
    task: str
    options: str
    seed: int
    n: int  # every observation, errors and missmatches included
    accuracy: Proportion
    faithfulness: Proportion | None
    introspection: Proportion | None


def _model_order(model: str) -> tuple[str, float, str]:
    """llama2-7b before llama2-13b before llama2-70b: by family, then size."""
    size = re.search(r"(\d+(?:\.\d+)?)b$", model)
    family = model[: size.start()] if size else model
    return (family, float(size.group(1)) if size else 0.0, model)


_TASK_ORDER: dict[str, int] = {kind: i for i, kind in enumerate(TASK_KINDS)}


def _order(spec: ExperimentSpec) -> tuple[Any, ...]:
    """Grouped by dataset, then task (in the paper's order), then model and the options."""
    task = _TASK_ORDER.get(spec.task, len(_TASK_ORDER))
    return (spec.dataset, spec.split, task, _model_order(spec.model), sorted(spec.config), spec.system_message,
            spec.seed)  # fmt: skip


def experiment_rows(experiments: Sequence[Experiment]) -> list[ExperimentRow]:
    rows = []
    for number, experiment in enumerate(sorted(experiments, key=lambda e: (_order(e.spec), e.name)), start=1):
        spec, results = experiment.spec, experiment.results
        numbers = summary_with_intervals(results)
        rows.append(
            ExperimentRow(number, experiment.name, spec.experiment_id, spec.model, experiment.answers,
                          spec.system_message, spec.dataset, spec.split,
                          spec.task, ",".join(sorted(spec.config)), spec.seed, results["total"], numbers["accuracy"],
                          numbers.get("faithfulness"), numbers.get("introspection"))
        )  # fmt: skip
    return rows


def find(rows: Sequence[ExperimentRow], name: str) -> ExperimentRow:
    """The row `name` names: its number in the table, its result's name (the experiment id,
    or the name of a result written beside it), or a prefix of only its name (`analysis_` may
    be left out)."""
    if name.removeprefix("#").isdigit():
        numbered = [row for row in rows if row.number == int(name.removeprefix("#"))]
        if numbered:
            return numbered[0]
        raise CompareError(f"no experiment number {name} (the table has {len(rows)})")
    exact = [row for row in rows if row.name in (name, _ID_LEAD + name)]
    if exact:
        return exact[0]
    matches = [row for row in rows if row.name.startswith((name, _ID_LEAD + name))]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise CompareError(f"no experiment {name!r} among the {len(rows)} compared")
    raise CompareError(f"{name!r} names {len(matches)} experiments: {', '.join(row.name for row in matches)}")


# -- paired comparisons --


@dataclass(frozen=True, slots=True)
class PairRow:
    a: ExperimentRow
    b: ExperimentRow
    measure: str  # accuracy, faithfulness or introspection
    test: PairedTest
    holm_p: float  # McNemar's p adjusted over every comparison of the table


def pair_rows(
    experiments: Sequence[Experiment], rows: Sequence[ExperimentRow], pairs: Sequence[tuple[str, str]]
) -> list[PairRow]:
    """The paired tests of each named pair, on the observations both experiments count:
    accuracy over the idx counted in both, faithfulness (or introspection) over the idx both
    classified correctly; Holm's correction over all of them."""
    by_name = {experiment.name: experiment for experiment in experiments}
    tested: list[tuple[ExperimentRow, ExperimentRow, str, PairedTest]] = []
    read: dict[str, dict[int, Outcome]] = {}
    for name_a, name_b in pairs:
        row_a, row_b = find(rows, name_a), find(rows, name_b)
        a, b = by_name[row_a.name], by_name[row_b.name]
        _check_paired(a, b)
        for experiment in (a, b):
            if experiment.name not in read:
                read[experiment.name] = _experiment_outcomes(experiment)
        outcomes_a, outcomes_b = read[a.name], read[b.name]
        shared = sorted(outcomes_a.keys() & outcomes_b.keys())
        if not shared:
            raise CompareError(f"{a.name} and {b.name} share no observation (idx)")
        counted = [i for i in shared if outcomes_a[i][0] and outcomes_b[i][0]]
        measures = [("accuracy", [outcomes_a[i][1] for i in counted], [outcomes_b[i][1] for i in counted])]
        judgement = kind_spec(a.spec.task).judgement
        if judgement is not None and judgement == kind_spec(b.spec.task).judgement:
            judged = [i for i in shared if outcomes_a[i][2] is not None and outcomes_b[i][2] is not None]
            measure = "faithfulness" if judgement == "faithful" else "introspection"
            measures.append(
                (measure, [bool(outcomes_a[i][2]) for i in judged], [bool(outcomes_b[i][2]) for i in judged])
            )
        for measure, values_a, values_b in measures:
            tested.append((row_a, row_b, measure, paired_test(values_a, values_b)))
    adjusted = holm([test.p_value for *_, test in tested])
    return [PairRow(a, b, measure, test, p) for (a, b, measure, test), p in zip(tested, adjusted, strict=True)]


def _check_paired(a: Experiment, b: Experiment) -> None:
    """Two experiments are paired when they ask about the same observations: the same dataset,
    split and seed (the seed orders the split, so a --limit takes the same idx)."""
    if a.name == b.name:
        raise CompareError(f"{a.name} is paired with itself")
    for what in ("dataset", "split", "seed"):
        if getattr(a.spec, what) != getattr(b.spec, what):
            raise CompareError(
                f"{a.name} and {b.name} are not on the same observations: "
                f"{what} {getattr(a.spec, what)} against {getattr(b.spec, what)}"
            )


# -- rendering --


def proportion_cell(value: Proportion | None) -> str:
    """`33.3% [16.3–56.3] 6/18`: the proportion, its 95% interval, its counts."""
    if value is None:
        return ""
    if value.value is None or value.low is None or value.high is None:
        return f"n/a {value.successes}/{value.n}"
    return f"{value.value:.1%} [{value.low * 100:.1f}–{value.high * 100:.1f}] {value.successes}/{value.n}"


def _points(value: float) -> str:
    return f"{value * 100:+.1f}"


def difference_cell(test: PairedTest) -> str:
    """`+16.7 pp [-5.0, +38.3]`: a minus b in percentage points, with the bootstrap interval."""
    if test.difference is None:
        return "n/a"
    interval = "" if test.low is None or test.high is None else f" [{_points(test.low)}, {_points(test.high)}]"
    return f"{_points(test.difference)} pp{interval}"


def _p(value: float) -> str:
    return f"{value:.3g}"


_EXPERIMENT_COLUMNS = ("#", "dataset", "split", "task", "model", "answers", "system", "options", "seed", "beside", "n",
                       "accuracy [95% CI]", "faithfulness [95% CI]", "introspection [95% CI]")  # fmt: skip
_PAIR_COLUMNS = ("a", "b", "measure", "n paired", "a only", "b only", "a − b [95% CI]", "McNemar p", "Holm p")


def _experiment_cells(row: ExperimentRow) -> list[str]:
    beside = row.name.removeprefix(row.experiment_id).removeprefix(".")  # a result of other conditions
    return [str(row.number), row.dataset, row.split, row.task, row.model, row.answers, row.system_message,
            row.options or "-", str(row.seed), beside, str(row.n), proportion_cell(row.accuracy),
            proportion_cell(row.faithfulness),
            proportion_cell(row.introspection)]  # fmt: skip


def _pair_cells(pair: PairRow) -> list[str]:
    test = pair.test
    return [f"#{pair.a.number}", f"#{pair.b.number}", pair.measure, str(test.n), str(test.a_only), str(test.b_only),
            difference_cell(test), _p(test.p_value), _p(pair.holm_p)]  # fmt: skip


def _without_empty_columns(header: Sequence[str], body: Sequence[Sequence[str]]) -> tuple[list[str], list[list[str]]]:
    """Leave out the columns no row fills (introspection, when no experiment asks it)."""
    keep = [i for i in range(len(header)) if any(row[i] for row in body)]
    return [header[i] for i in keep], [[row[i] for i in keep] for row in body]


def _aligned(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(cell) for cell in column) for column in zip(header, *body, strict=True)]
    numeric = [all(re.match(r"^[#+\-\d.]", row[i]) or not row[i] for row in body) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(cells, widths, numeric, strict=True)
        ).rstrip()

    return [line(header), line(["-" * width for width in widths]), *(line(row) for row in body)]


def _markdown(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return [line(header), line(["---"] * len(header)), *(line(row) for row in body)]


def _pairs_title(pairs: Sequence[PairRow]) -> str:
    return (f"Paired on the same observations: McNemar's exact test, a − b in percentage points with its paired "
            f"bootstrap 95% CI, Holm's correction over the {len(pairs)} comparison(s).")  # fmt: skip


def render(rows: Sequence[ExperimentRow], pairs: Sequence[PairRow], output_format: str) -> str:
    """The comparison as an aligned terminal table, Markdown, or CSV (one file: experiment
    rows, then pair rows, told apart by the `row` column)."""
    if output_format == "csv":
        return _csv(rows, pairs)
    draw = _markdown if output_format == "markdown" else _aligned
    lines = draw(*_without_empty_columns(_EXPERIMENT_COLUMNS, [_experiment_cells(row) for row in rows]))
    if pairs:
        lines += ["", _pairs_title(pairs), ""]
        lines += draw(_PAIR_COLUMNS, [_pair_cells(pair) for pair in pairs])
    return "\n".join(lines) + "\n"


def _proportion_fields(name: str, value: Proportion | None) -> dict[str, Any]:
    if value is None:
        return dict.fromkeys((name, f"{name}_low", f"{name}_high", f"{name}_successes", f"{name}_n"), "")
    return {name: value.value, f"{name}_low": value.low, f"{name}_high": value.high,
            f"{name}_successes": value.successes, f"{name}_n": value.n}  # fmt: skip


def _csv(rows: Sequence[ExperimentRow], pairs: Sequence[PairRow]) -> str:
    records: list[dict[str, Any]] = []
    for row in rows:
        records.append(
            {"row": "experiment", "number": row.number, "result": row.name, "experiment_id": row.experiment_id,
             "model": row.model, "answers": row.answers,
             "system_message": row.system_message, "dataset": row.dataset, "split": row.split, "task": row.task,
             "options": row.options, "seed": row.seed, "n": row.n, **_proportion_fields("accuracy", row.accuracy),
             **_proportion_fields("faithfulness", row.faithfulness),
             **_proportion_fields("introspection", row.introspection)}
        )  # fmt: skip
    for pair in pairs:
        test = pair.test
        records.append(
            {"row": "pair", "a": pair.a.name, "b": pair.b.name, "measure": pair.measure,
             "n_paired": test.n, "a_successes": test.a_successes, "b_successes": test.b_successes,
             "a_only": test.a_only, "b_only": test.b_only, "difference": test.difference,
             "difference_low": test.low, "difference_high": test.high, "mcnemar_p": test.p_value,
             "holm_p": pair.holm_p}
        )  # fmt: skip
    columns = list(dict.fromkeys(key for record in records for key in record))
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in record.items()} for record in records)
    return out.getvalue()


# -- one experiment's results, as `run`, `evaluate` and `results` print them --


def result_lines(results: dict[str, Any]) -> list[str]:
    """The paper's counts, each with its share of every observation, then accuracy and
    faithfulness (or introspection); every proportion with its n and 95% interval."""
    counts = {k: v for k, v in results.items() if k != "answer"}
    proportions = summary_with_intervals(results)
    shares = count_shares(results)
    width = max(len(k) for k in [*counts, *proportions])
    count_width = max(len(str(v)) for v in counts.values())
    lines = []
    for key, value in counts.items():
        share = shares.get(key)
        shown = "" if share is None or share.value is None else f"  {_share_text(share)}"
        lines.append(f"{key:>{width}}  {value!s:<{count_width}}{shown}".rstrip())
    lines += [f"{name:>{width}}  {proportion}" for name, proportion in proportions.items()]
    return lines


def _share_text(share: Proportion) -> str:
    assert share.low is not None and share.high is not None and share.value is not None
    return f"{share.value:.1%} of {share.n} [{share.low * 100:.1f}–{share.high * 100:.1f}]"


def live_summary(results: dict[str, Any]) -> str:
    """`accuracy 50.0% [30.0–70.0] 5/10  faithfulness ...`: a job's numbers so far."""
    return "  ".join(f"{name} {proportion_cell(value)}" for name, value in summary_with_intervals(results).items())


def resolve_job(jobs: Sequence[dict[str, Any]], name: str) -> str:
    """The job id `name` names: a job id, the experiment id of one job, or a prefix of only
    one job's id; CompareError listing the candidates otherwise."""
    ids = [job["job_id"] for job in jobs]
    if name in ids:
        return name
    matches = [job["job_id"] for job in jobs if job.get("experiment_id") == name] or [
        job_id for job_id in ids if job_id.startswith(name)
    ]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise CompareError(f"no job {name!r} (the aggregator knows {len(ids)} job(s); see `introspect status`)")
    raise CompareError(f"{name!r} names {len(matches)} jobs: {', '.join(sorted(matches))}")
