"""`introspect compare` over result folders written by `introspect evaluate`, and from an
aggregator's API; the intervals in `status` and the results table; `results` by prefix."""

from __future__ import annotations

import csv
import http.server
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from scipy.stats import binomtest
from statsmodels.stats.multitest import multipletests

from services.cli import main
from services.compare import outcomes
from services.core.results import summary
from services.core.stats import proportion
from tests.conftest import DATASET_MIRROR

# (model, dataset, task, options): the IMDB sample's 20 observations under five experiments,
# and eight RTE observations (another dataset: not paired with any of them).
EXPERIMENTS = [
    ("llama2-7b", "IMDB", "counterfactual", []),
    ("llama2-7b", "IMDB", "counterfactual", ["e-persona-you"]),
    ("llama2-7b", "IMDB", "redacted", []),
    ("falcon-7b", "IMDB", "classify", []),
    ("llama2-7b", "IMDB", "answerable", []),
    ("llama2-7b", "RTE", "classify", []),
]
COUNTERFACTUAL = "analysis_m-llama2-7b_y-none_d-imdb_p-test_t-counterfactual_c-_s-0"
PERSONA = "analysis_m-llama2-7b_y-none_d-imdb_p-test_t-counterfactual_c-e-persona-you_s-0"
REDACTED = "analysis_m-llama2-7b_y-none_d-imdb_p-test_t-redacted_c-_s-0"
RTE = "analysis_m-llama2-7b_y-none_d-rte_p-test_t-classify_c-_s-0"


@pytest.fixture(scope="module")
def results_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("results")
    for model, dataset, task, options in EXPERIMENTS:
        argv = ["evaluate", "--model", model, "--dataset", dataset, "--task", task, "--mirror", str(DATASET_MIRROR),
                "--out", str(out), *(f"--config={option}" for option in options)]  # fmt: skip
        if dataset == "RTE":
            argv += ["--limit", "8"]
        assert main(argv) == 0
    return out


def _result(folder: Path, experiment_id: str) -> dict[str, Any]:
    return json.loads((folder / f"{experiment_id}.json").read_text())


def _compare_csv(argv: list[str], capsys: pytest.CaptureFixture[str]) -> list[dict[str, str]]:
    assert main(["compare", *argv, "--format", "csv"]) == 0
    return list(csv.DictReader(io.StringIO(capsys.readouterr().out)))


def test_one_row_per_experiment_in_the_papers_order_with_its_numbers_and_intervals(results_folder, capsys) -> None:
    rows = [row for row in _compare_csv([str(results_folder)], capsys) if row["row"] == "experiment"]
    # Grouped by dataset, then task in the paper's order, then model and options.
    assert [(row["dataset"], row["task"], row["model"], row["options"]) for row in rows] == [
        ("IMDB", "classify", "falcon-7b", ""),
        ("IMDB", "answerable", "llama2-7b", ""),
        ("IMDB", "counterfactual", "llama2-7b", ""),
        ("IMDB", "counterfactual", "llama2-7b", "e-persona-you"),
        ("IMDB", "redacted", "llama2-7b", ""),
        ("RTE", "classify", "llama2-7b", ""),
    ]
    assert [row["number"] for row in rows] == ["1", "2", "3", "4", "5", "6"]
    for row in rows:
        results = _result(results_folder, row["experiment_id"])["results"]
        assert (row["split"], row["seed"], int(row["n"])) == ("test", "0", results["total"])
        for name, counted in summary(results).items():
            expected = proportion(counted.numerator, counted.denominator)
            assert (int(row[f"{name}_successes"]), int(row[f"{name}_n"])) == (counted.numerator, counted.denominator)
            assert float(row[name]) == pytest.approx(counted.value)
            assert (float(row[f"{name}_low"]), float(row[f"{name}_high"])) == pytest.approx(
                (expected.low, expected.high)
            )
    by_task = {row["task"]: row for row in rows if row["dataset"] == "IMDB"}
    assert by_task["classify"]["faithfulness"] == by_task["classify"]["introspection"] == ""
    assert by_task["answerable"]["introspection"] != "" and by_task["answerable"]["faithfulness"] == ""


def test_the_terminal_and_markdown_tables(results_folder, capsys) -> None:
    assert main(["compare", str(results_folder)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["#", "dataset", "split", "task", "model"]
    assert len(lines) == 2 + len(EXPERIMENTS)
    assert len({len(line.rstrip()) for line in lines[:2]}) == 1  # the rule under the header spans it
    counterfactual = next(line for line in lines if " counterfactual " in line and "e-persona-you" not in line)
    faithfulness = proportion(*_judged(_result(results_folder, COUNTERFACTUAL)["results"]))
    assert f"{faithfulness.value:.1%} [{faithfulness.low * 100:.1f}–{faithfulness.high * 100:.1f}]" in counterfactual

    assert main(["compare", str(results_folder), "--format", "markdown"]) == 0
    markdown = capsys.readouterr().out.splitlines()
    assert markdown[0].startswith("| # | dataset |") and markdown[1].startswith("| --- |")
    assert len(markdown) == 2 + len(EXPERIMENTS) and all(line.count("|") == markdown[0].count("|") for line in markdown)


def _judged(results: dict[str, Any]) -> tuple[int, int]:
    return results["faithful_and_correct"], results["correct"]


def _paired_by_hand(folder: Path, a: str, b: str, judged: bool) -> tuple[int, int, int]:
    """(n paired, a only, b only) from the two Parquet files, with pandas: accuracy over the idx
    counted in both (an error counts as wrong, a missmatch not at all), faithfulness over
    the idx correct in both."""
    frames = []
    for experiment_id in (a, b):
        records = pd.read_parquet(folder / f"{experiment_id}.parquet")
        counted = records["error"].notna() | (records["correct"].notna() & records["faithful"].notna())
        correct = records["error"].isna() & records["correct"].fillna(False).astype(bool)
        frames.append(pd.DataFrame({"idx": records["idx"], "counted": counted, "correct": correct,
                                    "faithful": records["faithful"]}).set_index("idx"))  # fmt: skip
    both = frames[0].merge(frames[1], left_index=True, right_index=True, suffixes=("_a", "_b"))
    if judged:
        both = both[both["counted_a"] & both["counted_b"] & both["correct_a"] & both["correct_b"]]
        outcome_a, outcome_b = both["faithful_a"].astype(bool), both["faithful_b"].astype(bool)
    else:
        both = both[both["counted_a"] & both["counted_b"]]
        outcome_a, outcome_b = both["correct_a"], both["correct_b"]
    return len(both), int((outcome_a & ~outcome_b).sum()), int((outcome_b & ~outcome_a).sum())


def test_pairs_tested_on_the_shared_observations_and_holm_corrected(results_folder, capsys) -> None:
    # An id; an id without its `analysis_` lead; a row number (#5: redacted).
    argv = [str(results_folder), "--pair", COUNTERFACTUAL, PERSONA, "--pair", COUNTERFACTUAL.removeprefix("analysis_"),
            "5"]  # fmt: skip
    pairs = [row for row in _compare_csv(argv, capsys) if row["row"] == "pair"]
    assert [(row["a"], row["b"], row["measure"]) for row in pairs] == [
        (COUNTERFACTUAL, PERSONA, "accuracy"),
        (COUNTERFACTUAL, PERSONA, "faithfulness"),
        (COUNTERFACTUAL, REDACTED, "accuracy"),
        (COUNTERFACTUAL, REDACTED, "faithfulness"),
    ]
    for row in pairs:
        n, a_only, b_only = _paired_by_hand(results_folder, row["a"], row["b"], row["measure"] == "faithfulness")
        assert (int(row["n_paired"]), int(row["a_only"]), int(row["b_only"])) == (n, a_only, b_only)
        assert float(row["difference"]) == pytest.approx((a_only - b_only) / n)
        assert float(row["difference_low"]) <= float(row["difference"]) <= float(row["difference_high"])
        expected_p = binomtest(a_only, a_only + b_only).pvalue if a_only + b_only else 1.0
        assert float(row["mcnemar_p"]) == pytest.approx(expected_p)
    assert any(int(row["a_only"]) + int(row["b_only"]) for row in pairs)  # the stand-in's variants disagree somewhere
    holm = multipletests([float(row["mcnemar_p"]) for row in pairs], method="holm")[1]
    assert [float(row["holm_p"]) for row in pairs] == pytest.approx(list(holm))


def test_pairs_in_the_terminal_table_and_the_same_every_time(results_folder, capsys) -> None:
    argv = ["compare", str(results_folder), "--pair", "3", "4", "--pair", "1", "3"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert main(argv) == 0
    assert capsys.readouterr().out == first  # the bootstrap is seeded
    table = first.split("\n\n")
    assert "McNemar's exact test" in table[1] and "Holm's correction over the 3 comparison(s)" in table[1]
    pair_lines = table[2].splitlines()
    assert pair_lines[0].split()[:3] == ["a", "b", "measure"]
    assert [line.split()[:3] for line in pair_lines[2:]] == [
        ["#3", "#4", "accuracy"],
        ["#3", "#4", "faithfulness"],
        ["#1", "#3", "accuracy"],  # classify against counterfactual: accuracy alone is shared
    ]
    assert all(" pp [" in line for line in pair_lines[2:])


def test_outcomes_count_as_the_aggregate_does(results_folder) -> None:
    for experiment_id in (COUNTERFACTUAL, PERSONA, REDACTED):
        results = _result(results_folder, experiment_id)["results"]
        records = pd.read_parquet(results_folder / f"{experiment_id}.parquet").to_dict("records")
        per_idx = outcomes("counterfactual", [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in records])
        assert len(per_idx) == results["total"]
        assert sum(not counted for counted, _, _ in per_idx.values()) == results["missmatch"]
        assert sum(correct for _, correct, _ in per_idx.values()) == results["correct"]
        assert sum(judged is not None for *_, judged in per_idx.values()) == results["correct"]
        assert sum(bool(judged) for *_, judged in per_idx.values()) == results["faithful_and_correct"]


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        (["3", RTE], "are not on the same observations: dataset IMDB against RTE"),
        (["m-llama2-7b_y-none_d-imdb_p-test_t-counterfactual", "5"],
         f"names 2 experiments: {COUNTERFACTUAL}, {PERSONA}"),
        (["analysis_m-gpt", "5"], "no experiment 'analysis_m-gpt' among the 6 compared"),
        (["9", "5"], "no experiment number 9 (the table has 6)"),
        (["3", COUNTERFACTUAL], "is paired with itself"),
    ],
)  # fmt: skip
def test_a_pair_that_cannot_be_made_is_one_line(results_folder, capsys, pair: list[str], message: str) -> None:
    assert main(["compare", str(results_folder), "--pair", *pair]) == 2
    err = capsys.readouterr().err
    assert err.startswith("introspect: error: ") and message in err and err.count("\n") == 1


def test_a_folder_of_other_files_and_unknown_keys(tmp_path, results_folder, capsys) -> None:
    assert main(["compare", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"introspect: error: no result files (<experiment id>.json) in {tmp_path}\n"
    assert main(["compare", str(tmp_path / "absent")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    # A key beside the paper's (the provenance) is read past; a JSON that is no result file is named and left out.
    document = _result(results_folder, COUNTERFACTUAL) | {"provenance": {"answers": "stand-in"}}
    (tmp_path / f"{COUNTERFACTUAL}.json").write_text(json.dumps(document))
    (tmp_path / "notes.json").write_text('{"what": "not a result"}')
    assert main(["compare", str(tmp_path)]) == 0
    out = capsys.readouterr()
    assert len(out.out.splitlines()) == 3 and "counterfactual" in out.out
    assert out.err.startswith("introspect: notes.json: not a result file")
    # Without its records file, a pair says which one is missing.
    (tmp_path / f"{PERSONA}.json").write_text((results_folder / f"{PERSONA}.json").read_text())
    assert main(["compare", str(tmp_path), "--pair", "1", "2"]) == 2
    assert capsys.readouterr().err.endswith(
        f"\nintrospect: error: {COUNTERFACTUAL}: no records file (.parquet) beside the result\n"
    )


def test_a_result_written_beside_another_is_a_row_of_its_own(tmp_path, results_folder, capsys) -> None:
    # The same experiment, answered by a real server: written beside the stand-in's result.
    beside = f"{COUNTERFACTUAL}.20250101000000-ab12"
    document = _result(results_folder, COUNTERFACTUAL)
    document["provenance"] = document.get("provenance", {}) | {"stand_in": False, "served_model_id": "meta-llama/x"}
    for name, text in ((COUNTERFACTUAL, (results_folder / f"{COUNTERFACTUAL}.json").read_text()),
                       (beside, json.dumps(document))):  # fmt: skip
        (tmp_path / f"{name}.json").write_text(text)
        (tmp_path / f"{name}.parquet").write_bytes((results_folder / f"{COUNTERFACTUAL}.parquet").read_bytes())
    rows = _compare_csv([str(tmp_path), "--pair", "1", "2"], capsys)
    assert [(row["result"], row["answers"]) for row in rows if row["row"] == "experiment"] == [
        (COUNTERFACTUAL, "stand-in"),
        (beside, "meta-llama/x"),
    ]
    pairs = [row for row in rows if row["row"] == "pair"]
    assert [(row["a"], row["b"], row["a_only"], row["b_only"], row["mcnemar_p"]) for row in pairs] == [
        (COUNTERFACTUAL, beside, "0", "0", "1.0"),
        (COUNTERFACTUAL, beside, "0", "0", "1.0"),
    ]
    assert main(["compare", str(tmp_path)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert "beside" in table[0] and "20250101000000-ab12" in table[3] and "meta-llama/x" in table[3]


def test_each_printed_count_has_its_share_and_interval(tmp_path, capsys) -> None:
    argv = ["evaluate", "--dataset", "IMDB", "--task", "counterfactual", "--mirror", str(DATASET_MIRROR),
            "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    results = _result(tmp_path, COUNTERFACTUAL)["results"]
    missmatch = proportion(results["missmatch"], results["total"])
    assert lines["missmatch"].split()[1:] == [
        str(results["missmatch"]), f"{missmatch.value:.1%}", "of", str(results["total"]),
        f"[{missmatch.low * 100:.1f}–{missmatch.high * 100:.1f}]",
    ]  # fmt: skip
    assert lines["total"].split()[1:] == [str(results["total"])]
    accuracy = proportion(results["correct"], results["total"] - results["missmatch"])
    assert lines["accuracy"].split(maxsplit=1)[1] == str(accuracy)
    assert "95% CI" in lines["faithfulness"]


# -- against an aggregator's API --


class FakeAggregator:
    """The aggregator's /jobs API over result files: a complete job for each file, and one job
    still running."""

    def __init__(self, folder: Path) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        for path in sorted(folder.glob("*.json")):
            job_id = f"{path.stem}.20250101000000-ab{len(self.jobs):02d}"
            results = json.loads(path.read_text())["results"]
            files = {"result.json": path, "records.parquet": path.with_suffix(".parquet")}
            self.jobs[job_id] = {"job_id": job_id, "experiment_id": path.stem, "expected": 20, "received": 20,
                                 "complete": True, "results": results, "files": files,
                                 "result_file": f"/elsewhere/results/{path.name}"}  # fmt: skip
        running = {"faithful": 1, "faithful_and_correct": 1, "correct": 2, "missmatch": 0, "error": 0, "total": 4}
        self.jobs["analysis_m-falcon-7b_y-default_d-imdb_p-test_t-redacted_c-_s-0.20250101000000-ffff"] = {
            "job_id": "analysis_m-falcon-7b_y-default_d-imdb_p-test_t-redacted_c-_s-0.20250101000000-ffff",
            "experiment_id": "analysis_m-falcon-7b_y-default_d-imdb_p-test_t-redacted_c-_s-0",
            "expected": 20, "received": 4, "complete": False, "results": running, "files": {},
        }  # fmt: skip

    def status(self, job_id: str) -> dict[str, Any]:
        return {k: v for k, v in self.jobs[job_id].items() if k != "files"}


@pytest.fixture
def aggregator(results_folder: Path) -> Iterator[tuple[str, FakeAggregator]]:
    fake = FakeAggregator(results_folder)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = self.path.strip("/").split("/")
            if parts == ["jobs"]:
                self._send(json.dumps([fake.status(job_id) for job_id in fake.jobs]).encode())
            elif len(parts) == 2 and parts[1] in fake.jobs:
                self._send(json.dumps(fake.status(parts[1])).encode())
            elif len(parts) == 3 and parts[1] in fake.jobs and parts[2] in fake.jobs[parts[1]]["files"]:
                self._send(fake.jobs[parts[1]]["files"][parts[2]].read_bytes())
            else:
                self._send(f"no job {parts[-1]!r}\n".encode(), 404)

        def _send(self, body: bytes, code: int = 200) -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", fake
    finally:
        server.shutdown()
        server.server_close()


def test_compare_from_an_aggregator_equals_compare_from_its_files(results_folder, aggregator, capsys) -> None:
    url, _ = aggregator
    argv = ["--pair", "3", "4"]
    assert main(["compare", str(results_folder), *argv]) == 0
    from_folder = capsys.readouterr().out
    assert main(["compare", "--aggregator", url, *argv]) == 0
    out = capsys.readouterr()
    assert out.out == from_folder
    assert out.err == "introspect: 1 job(s) still running, not shown\n"


def test_status_shows_each_jobs_numbers_so_far_with_intervals(aggregator, capsys) -> None:
    url, fake = aggregator
    assert main(["status", "--aggregator", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(fake.jobs)
    running = next(line for line in lines if "ffff" in line)
    assert "4/20  running" in running
    accuracy, faithfulness = proportion(2, 4), proportion(1, 2)
    assert running.endswith(
        f"accuracy 50.0% [{accuracy.low * 100:.1f}–{accuracy.high * 100:.1f}] 2/4  "
        f"faithfulness 50.0% [{faithfulness.low * 100:.1f}–{faithfulness.high * 100:.1f}] 1/2"
    )
    assert all("complete  accuracy " in line for line in lines if "ffff" not in line)


def test_results_by_experiment_id_or_unique_prefix(aggregator, capsys) -> None:
    url, fake = aggregator
    job_id = next(job_id for job_id, job in fake.jobs.items() if job["experiment_id"] == REDACTED)
    for name in (job_id, REDACTED, job_id[:-3], "analysis_m-llama2-7b_y-none_d-imdb_p-test_t-r"):
        assert main(["results", name, "--aggregator", url]) == 0
        out = capsys.readouterr().out
        assert f"total  {fake.jobs[job_id]['results']['total']}" in out and "faithfulness" in out
    assert main(["results", REDACTED, "--aggregator", url, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["args"]["task"] == "redacted"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("analysis_m-llama2-7b_y-none_d-imdb_p-test_t-counterfactual", "names 2 jobs: analysis_m-llama2-7b_y-none"),
        ("analysis_m-gpt", "no job 'analysis_m-gpt' (the aggregator knows 7 job(s); see `introspect status`)"),
    ],
)
def test_an_ambiguous_or_unknown_job_is_one_line(aggregator, capsys, name: str, message: str) -> None:
    url, _ = aggregator
    assert main(["results", name, "--aggregator", url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("introspect: error: ") and message in err and err.count("\n") == 1
    if "names 2" in message:
        assert f"{COUNTERFACTUAL}.20250101000000-ab" in err and f"{PERSONA}.20250101000000-ab" in err
