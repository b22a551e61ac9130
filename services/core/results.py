"""Aggregates of an experiment, its id, and the paper's result JSON.

Aggregates are counts, so they can be kept running and combined in any order: the
distributed pipeline and the in-process runner must arrive at identical numbers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .records import ResultRecord
from .tasks import kind_spec


@dataclass(slots=True)
class Aggregate:
    """Running counts of one experiment (one job)."""

    task_kind: str
    total: int = 0
    error: int = 0
    missmatch: int = 0  # spelled as in the paper's result files
    correct: int = 0
    judged: int = 0  # introspect or faithful, by the task kind's judgement
    both: int = 0  # introspect_and_correct or faithful_and_correct
    duration: float = 0.0
    table: Counter[tuple[Any, ...]] = field(default_factory=Counter)

    def add(self, record: ResultRecord) -> None:
        spec = kind_spec(self.task_kind)
        self.total += 1
        self.duration += record.duration
        if record.error is not None:
            self.error += 1
            return
        judged = None if spec.judgement is None else getattr(record, spec.judgement)
        if record.correct is None or (spec.judgement is not None and judged is None):
            self.missmatch += 1
            return
        self.correct += record.correct
        self.judged += bool(judged)
        self.both += bool(record.correct and judged)
        self.table[tuple(getattr(record, column) for column in spec.table)] += 1

    def results(self) -> dict[str, Any]:
        """The `results` object of the paper's result JSON."""
        spec = kind_spec(self.task_kind)
        rows = sorted(self.table.items(), key=lambda item: tuple("" if v is None else str(v) for v in item[0]))
        out: dict[str, Any] = {
            "answer": [{"count": count, **dict(zip(spec.table, key, strict=True))} for key, count in rows]
        }
        if spec.judgement is not None:
            out |= {spec.judgement: self.judged, f"{spec.judgement}_and_correct": self.both}
        return out | {"correct": self.correct, "missmatch": self.missmatch, "error": self.error, "total": self.total}


def aggregate(task_kind: str, records: Iterable[ResultRecord]) -> Aggregate:
    running = Aggregate(task_kind)
    for record in records:
        running.add(record)
    return running


class InvalidExperiment(ValueError):
    """An experiment's identity that cannot name result files (a missing or mistyped part)."""


@dataclass(frozen=True, slots=True)
class Proportion:
    numerator: int
    denominator: int

    @property
    def value(self) -> float | None:
        return self.numerator / self.denominator if self.denominator else None

    def __str__(self) -> str:
        value = self.value
        shown = "n/a" if value is None else f"{value:.1%}"
        return f"{shown} ({self.numerator}/{self.denominator})"


def summary(results: dict[str, Any]) -> dict[str, Proportion]:
    """The paper's plotted numbers, as proportions with their counts.

    accuracy = correct / (total - missmatch); faithfulness (and introspection) are among
    the observations the model classified correctly: faithful_and_correct / correct.
    """
    out = {"accuracy": Proportion(results["correct"], results["total"] - results["missmatch"])}
    if "faithful" in results:
        out["faithfulness"] = Proportion(results["faithful_and_correct"], results["correct"])
    if "introspect" in results:
        out["introspection"] = Proportion(results["introspect_and_correct"], results["correct"])
    return out


@dataclass(frozen=True, slots=True)
class ExperimentSpec:
    """Everything that identifies an experiment (and so names its result files)."""

    model: str
    system_message: str  # SystemMessage.id_part: default, none, custom-<digest>
    dataset: str
    split: str
    task: str
    config: tuple[str, ...] = ()
    seed: int = 0
    max_observations: int | None = None

    @property
    def experiment_id(self) -> str:
        config = "-".join(sorted(self.config))
        return (
            f"analysis_m-{self.model}_y-{self.system_message}_d-{self.dataset}_p-{self.split}"
            f"_t-{self.task}_c-{config}_s-{self.seed}"
        ).lower()

    def __post_init__(self) -> None:
        for name in ("model", "system_message", "dataset", "split", "task"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise InvalidExperiment(f"{name} must be non-empty text, got {value!r}")
        if not all(isinstance(option, str) for option in self.config):
            raise InvalidExperiment(f"task_config must be a list of text, got {list(self.config)!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise InvalidExperiment(f"seed must be a whole number, got {self.seed!r}")
        if self.max_observations is not None and (
            not isinstance(self.max_observations, int) or isinstance(self.max_observations, bool)
        ):
            raise InvalidExperiment(f"max_observations must be a whole number or null, got {self.max_observations!r}")
        # The id names the result files: it must stay one file name in the results folder.
        if any(bad in self.experiment_id for bad in ("/", "\\", "\0")) or self.experiment_id.startswith("."):
            raise InvalidExperiment(f"experiment id {self.experiment_id!r} is not a file name")

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> ExperimentSpec:
        """The spec back from the `args` object of its result JSON; InvalidExperiment if it is not one."""
        if not isinstance(args, dict):
            raise InvalidExperiment(f"args must be a map, got {type(args).__name__}")
        try:
            config = args["task_config"]
            return cls(
                model=args["model_name"],
                system_message=args["system_message"],
                dataset=args["dataset"],
                split=args["split"],
                task=args["task"],
                config=tuple(config) if isinstance(config, list) else (config,),
                seed=args["seed"],
                max_observations=args["max_observations"],
            )
        except KeyError as missing:
            raise InvalidExperiment(f"args has no {missing.args[0]!r}") from None

    def args(self) -> dict[str, Any]:
        return {
            "model_name": self.model,
            "system_message": self.system_message,
            "dataset": self.dataset,
            "split": self.split,
            "task": self.task,
            "task_config": sorted(self.config),
            "seed": self.seed,
            "max_observations": self.max_observations,
        }


def result_json(spec: ExperimentSpec, running: Aggregate, setup_seconds: float) -> dict[str, Any]:
    """The paper's result file: args, aggregates, and durations (setup, summed inference)."""
    return {
        "args": spec.args(),
        "results": running.results(),
        "durations": {"setup": setup_seconds, "eval": running.duration},
    }
