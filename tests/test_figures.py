"""The paper's figures (`services/figures.py`): each figure's numbers are the aggregates of
the result files it was drawn from, recomputed here from the JSONs' `results`; the files
are a valid PDF and a PNG of a paper column; a figure without data is left out."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from PIL import Image
from statsmodels.stats.proportion import proportion_confint

from services.cli import main
from services.figures import PNG_DPI, WIDTH_IN, FigureFile, TableFile, paper_figures, paper_tables
from tests.conftest import DATASET_MIRROR

# (model, task, options, extra arguments): IMDB, 10 observations each.
EXPERIMENTS = [
    ("llama2-70b", "classify", [], []),
    ("llama2-7b", "classify", [], []),
    ("falcon-7b", "classify", [], []),
    ("llama2-70b", "counterfactual", [], []),
    ("llama2-7b", "counterfactual", [], []),
    ("mistral-v1-7b", "counterfactual", [], []),
    ("llama2-70b", "redacted", [], []),
    # llama2-70b's prompt variants, as the paper's grid runs them
    ("llama2-70b", "counterfactual", ["c-persona-you", "e-persona-you"], []),
    ("llama2-70b", "counterfactual", ["e-implcit-target"], []),
    ("llama2-70b", "redacted", ["m-removed"], []),
    ("llama2-70b", "classify", ["m-removed", "c-persona-human"], []),
    ("llama2-70b", "answerable", [], []),
    # in no figure: another seed, a system message the paper's grid did not run for this
    # model, a prompt variant outside the grid
    ("llama2-7b", "classify", [], ["--seed", "1"]),
    ("llama2-7b", "counterfactual", [], ["--system-message", "default"]),
    ("llama2-70b", "counterfactual", ["e-persona-you"], []),
]
PAPER_MODELS = {"llama2-70b", "llama2-7b", "falcon-40b", "falcon-7b", "mistral-v1-7b"}
DEFAULT_SYSTEM = {"llama2-70b": "none", "llama2-7b": "none", "falcon-40b": "default", "falcon-7b": "default",
                  "mistral-v1-7b": "none"}  # fmt: skip
# A result of other conditions beside llama2-70b's counterfactual file, said to be a real
# model's: the figures take it over the stand-in's, and its inference time is the table's.
BESIDE = "analysis_m-llama2-70b_y-none_d-imdb_p-test_t-counterfactual_c-_s-0.20991231000000-abcd"
BESIDE_OF = BESIDE.split(".")[0]  # the experiment's own file, which the figures leave for it
BESIDE_EVAL_SECONDS = 5 * 3600 + 7 * 60 + 30
HEIGHTS = {"faithfulness-by-model-size": 3.5, "accuracy-by-model-size": 2.0, "faithfulness-by-prompt": 4.0,
           "accuracy-by-prompt": 2.5}  # fmt: skip


def _evaluate(out: Path, model: str, task: str, options: list[str], extra: list[str]) -> None:
    argv = ["evaluate", "--model", model, "--dataset", "IMDB", "--task", task, "--limit", "10", "--mirror",
            str(DATASET_MIRROR), "--out", str(out), *(f"--config={o}" for o in options), *extra]  # fmt: skip
    assert main(argv) == 0


@pytest.fixture(scope="module")
def results_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("results")
    for experiment in EXPERIMENTS:
        _evaluate(out, *experiment)
    own = json.loads((out / f"{BESIDE_OF}.json").read_text())
    own["provenance"] |= {"stand_in": False, "served_model_id": "meta-llama/Llama-2-70b-chat-hf"}
    own["durations"]["eval"] = BESIDE_EVAL_SECONDS
    own["results"] |= {"correct": 8, "faithful": 5, "faithful_and_correct": 3, "missmatch": 1, "total": 10}
    (out / f"{BESIDE}.json").write_text(json.dumps(own))
    return out


@pytest.fixture(scope="module")
def drawn(results_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, FigureFile]:
    """Every figure, drawn once for the module (plotnine takes about a second a figure)."""
    return {figure.name: figure for figure in paper_figures(results_folder, tmp_path_factory.mktemp("figures"))}


@pytest.fixture(scope="module")
def tables(results_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> list[TableFile]:
    return paper_tables(results_folder, tmp_path_factory.mktemp("tables"))


def _documents(folder: Path) -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in folder.glob("*.json")}


def _in_figures(name: str, document: dict[str, Any]) -> bool:
    """The files the figures may draw: the paper grid's seed and split, each model's default
    system message, and of llama2-70b's counterfactual the real model's file beside it."""
    args = document["args"]
    system = DEFAULT_SYSTEM[args["model_name"]]
    return args["seed"] == 0 and args["split"] == "test" and args["system_message"] == system and name != BESIDE_OF


def _proportion(document: dict[str, Any], measure: str) -> tuple[int, int]:
    results = document["results"]
    if measure == "accuracy":
        return results["correct"], results["total"] - results["missmatch"]
    return results["faithful_and_correct"], results["correct"]


def _assert_plots_the_aggregates(data: pd.DataFrame, documents: dict[str, dict[str, Any]], measure: str) -> None:
    for row in data.itertuples():
        successes, n = _proportion(documents[row.result], measure)
        low, high = proportion_confint(successes, n, alpha=0.05, method="wilson")
        assert (row.successes, row.n) == (successes, n)
        assert row.value == pytest.approx(successes / n)
        assert (row.low, row.high) == pytest.approx((low, high), abs=1e-12)


def _expected(documents: dict[str, dict[str, Any]], tasks: set[str], measure: str,
              variants: bool) -> set[str]:  # fmt: skip
    """The result files a figure must show: default prompts of every paper model, or the
    paper's prompt variants of llama2-70b; none whose proportion has no observations."""
    grid = {frozenset(), frozenset({"c-persona-you", "e-persona-you"}), frozenset({"e-implcit-target"}),
            frozenset({"m-removed"}), frozenset({"m-removed", "c-persona-human"})}  # fmt: skip
    chosen = set()
    for name, document in documents.items():
        args = document["args"]
        if args["task"] not in tasks or not _in_figures(name, document) or args["model_name"] not in PAPER_MODELS:
            continue
        if variants:
            shown = frozenset(args["task_config"]) in grid and args["model_name"] == "llama2-70b"
        else:
            shown = not args["task_config"]
        if shown and _proportion(document, measure)[1]:
            chosen.add(name)
    return chosen


@pytest.mark.parametrize(
    ("figure", "tasks", "measure", "variants"),
    [
        ("faithfulness-by-model-size", {"counterfactual", "redacted", "importance"}, "faithfulness", False),
        ("accuracy-by-model-size", {"classify"}, "accuracy", False),
        ("faithfulness-by-prompt", {"counterfactual", "redacted", "importance"}, "faithfulness", True),
        ("accuracy-by-prompt", {"classify"}, "accuracy", True),
    ],
)
def test_each_proportion_figure_plots_the_aggregates_of_its_result_files(
    drawn, results_folder, figure, tasks, measure, variants
) -> None:
    documents = _documents(results_folder)
    data = drawn[figure].data
    assert set(data["result"]) == _expected(documents, tasks, measure, variants)
    assert len(data) == len(set(data["result"]))  # one bar or point per result file
    _assert_plots_the_aggregates(data, documents, measure)
    for row in data.itertuples():
        args = documents[row.result]["args"]
        assert (row.dataset, row.task) == (args["dataset"], args["task"])


def test_the_model_size_figures_tag_family_and_size_and_prefer_a_models_answers(drawn) -> None:
    data = drawn["faithfulness-by-model-size"].data
    tags = {(row.model, row.family, row.size) for row in data.itertuples()}
    assert tags == {("llama2-70b", "llama2", 70), ("llama2-7b", "llama2", 7), ("mistral-v1-7b", "mistral-v1", 7)}
    llama = data[(data["model"] == "llama2-70b") & (data["task"] == "counterfactual")]
    assert list(llama["result"]) == [BESIDE] and list(llama["answers"]) == ["meta-llama/Llama-2-70b-chat-hf"]
    assert (llama["successes"].iloc[0], llama["n"].iloc[0]) == (3, 8)


def test_the_prompt_figures_tag_persona_and_variant(drawn) -> None:
    faithfulness = drawn["faithfulness-by-prompt"].data
    tags = {(row.task, row.options, row.persona, row.variant) for row in faithfulness.itertuples()}
    assert tags <= {
        ("counterfactual", "", "objective", "explicit"),
        ("counterfactual", "c-persona-you,e-persona-you", "you", "explicit"),
        ("counterfactual", "e-implcit-target", "objective", "implicit"),
        ("redacted", "", "objective", "redacted"),
        ("redacted", "m-removed", "objective", "removed"),
    }
    accuracy = drawn["accuracy-by-prompt"].data
    assert {(row.options, row.persona, row.variant) for row in accuracy.itertuples()} == {
        ("", "objective", "redacted"),
        ("c-persona-human,m-removed", "human", "removed"),
    }
    assert "llama2-70b" in drawn["faithfulness-by-prompt"].title


def test_the_class_distributions_sum_the_count_tables_of_their_result_files(drawn, results_folder) -> None:
    documents = _documents(results_folder)
    fill = {"classify": "label", "answerable": "ability", "counterfactual": "explain_predict",
            "redacted": "explain_predict"}  # fmt: skip
    assert {name for name in drawn if name.startswith("classes-")} == {f"classes-{task}-imdb" for task in fill}
    for task, column in fill.items():
        data = drawn[f"classes-{task}-imdb"].data
        names = {name for names in data["results"] for name in names.split()}
        assert names == {name for name, document in documents.items()
                         if document["args"]["task"] == task and document["args"]["model_name"] == "llama2-70b"
                         and document["args"]["system_message"] == "none" and name != BESIDE_OF}  # fmt: skip
        expected: dict[tuple[str, str], int] = {}
        for name in names:
            for entry in documents[name]["results"]["answer"]:
                key = (str(entry["predict"]), str(entry[column]))
                expected[key] = expected.get(key, 0) + entry["count"]
        plotted = data.groupby(["predict", "fill"])["count"].sum().to_dict()
        assert plotted == expected


def test_the_compute_table_is_the_inference_time_of_each_result(tables, results_folder) -> None:
    documents = _documents(results_folder)
    (table,) = tables
    data = table.data
    for row in data.itertuples():
        seconds = documents[row.result]["durations"]["eval"]
        assert (row.eval_seconds, row.hours) == pytest.approx((seconds, seconds / 3600))
    expected = {name for name, document in documents.items()
                if _in_figures(name, document) and not document["args"]["task_config"]
                and document["args"]["task"] in {"classify", "counterfactual", "redacted", "importance"}}  # fmt: skip
    assert set(data["result"]) == expected | {BESIDE}
    assert list(data[data["result"] == BESIDE]["hh_mm"]) == ["05:07"]
    # the original's order: llama2-70b, llama2-7b, falcon-7b, mistral-v1-7b; tasks as its columns
    assert list(dict.fromkeys(data["model"])) == ["llama2-70b", "llama2-7b", "falcon-7b", "mistral-v1-7b"]
    csv_rows = pd.read_csv(table.csv)
    assert list(csv_rows["hours"]) == pytest.approx(list(data["hours"]))
    markdown = table.markdown.read_text()
    assert "| IMDB | Llama 2 | 70B | 00:00 | 05:07 | 00:00 | – |" in markdown
    latex = table.latex.read_text()
    assert latex.startswith(r"\begin{tabular}") and r"& 70B & 00:00 & 05:07 & 00:00 & -- \\" in latex


def test_each_figure_is_a_pdf_and_a_png_of_a_paper_column(drawn) -> None:
    assert set(HEIGHTS) <= set(drawn)
    for figure in drawn.values():
        assert figure.pdf.read_bytes().startswith(b"%PDF")
        with Image.open(figure.png) as image:
            assert image.format == "PNG"
            height = HEIGHTS.get(figure.name, 4.5 if "importance" not in figure.name else 3.5)
            assert image.size == (round(WIDTH_IN * PNG_DPI), round(height * PNG_DPI))
        assert figure.title and not figure.data.empty


def test_a_figure_without_data_is_left_out(results_folder, tmp_path, capsys) -> None:
    few = tmp_path / "results"
    few.mkdir()
    for name in ("analysis_m-llama2-7b_y-none_d-imdb_p-test_t-classify_c-_s-0",):
        shutil.copy(results_folder / f"{name}.json", few / f"{name}.json")
    assert main(["figures", str(few), "--out", str(tmp_path / "figures")]) == 0
    written = capsys.readouterr().out.split()
    names = {Path(path).name for path in written}
    assert names == {"accuracy-by-model-size.pdf", "accuracy-by-model-size.png", "classes-classify-imdb.pdf",
                     "classes-classify-imdb.png", "compute.csv", "compute.md", "compute.tex"}  # fmt: skip
    assert all(Path(path).is_file() for path in written)

    empty = tmp_path / "empty"
    empty.mkdir()
    assert paper_figures(empty, tmp_path / "none") == [] and paper_tables(empty, tmp_path / "none") == []
