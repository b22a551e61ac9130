"""`introspect run`, `submit`, `status`, `results` and `serve`, as a user types them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from proto import Job
from services.backends import engine_spec
from services.backends.contract import ENGINES
from services.cli import main
from services.client import dead_letters
from services.local import LocalPipeline, free_port, wait_for_port
from services.runtime.settings import Settings
from tests.conftest import DATASET_MIRROR
from tests.support.pipeline import get_json, standin_stats, submit_jobs, wait_complete

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

EXPERIMENT = "analysis_m-llama2-7b_y-none_d-imdb_p-test_t-counterfactual_c-_s-0"
COMMON = ["--dataset", "IMDB", "--task", "counterfactual", "--mirror", str(DATASET_MIRROR)]


def test_run_prints_the_results_table_and_equals_evaluate(tmp_path, capsys) -> None:
    argv = ["run", *COMMON, "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    out = capsys.readouterr()
    assert "answers from the stand-in" in out.err
    assert "faithfulness" in out.out and f"results: {tmp_path / 'run' / EXPERIMENT}.json" in out.out
    assert main(["evaluate", *COMMON, "--out", str(tmp_path / "evaluate")]) == 0
    run = json.loads((tmp_path / "run" / f"{EXPERIMENT}.json").read_text())
    evaluate = json.loads((tmp_path / "evaluate" / f"{EXPERIMENT}.json").read_text())
    assert run["results"] == evaluate["results"] and run["args"] == evaluate["args"]
    records = pd.read_parquet(tmp_path / "run" / f"{EXPERIMENT}.parquet").sort_values("idx").reset_index(drop=True)
    expected = (
        pd.read_parquet(tmp_path / "evaluate" / f"{EXPERIMENT}.parquet").sort_values("idx").reset_index(drop=True)
    )
    pd.testing.assert_frame_equal(records, expected)


def test_run_through_an_openai_compatible_server(tmp_path, capsys) -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "services.cli", "standin", "--port", str(port)],
                              stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for_port(port, "the stand-in", server, timeout=60)  # a busy machine imports slowly
        endpoint = f"openai+http://127.0.0.1:{port}"
        argv = ["run", *COMMON, "--endpoint", endpoint, "--data-dir", str(tmp_path / "d"), "--out", str(tmp_path)]
        assert main(argv) == 0
    finally:
        server.terminate()
        server.wait()
    assert f"answers from {endpoint}" in capsys.readouterr().err
    assert main(["evaluate", *COMMON, "--out", str(tmp_path / "evaluate")]) == 0
    run = json.loads((tmp_path / f"{EXPERIMENT}.json").read_text())
    assert run["results"] == json.loads((tmp_path / "evaluate" / f"{EXPERIMENT}.json").read_text())["results"]


def test_run_refuses_a_job_in_one_line(tmp_path, capsys) -> None:
    argv = ["run", "--dataset", "RTE", "--task", "classify", "--mirror", str(tmp_path), "--data-dir", str(tmp_path)]
    assert main(argv) == 1
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("introspect: error: no mirror of RTE in ")


def test_submit_wait_reports_each_job_taken_or_refused(tmp_path, capsys, pipeline: LocalPipeline) -> None:
    good = ["submit", "--dataset", "IMDB", "--task", "classify", "--mirror", str(DATASET_MIRROR), "--limit", "3",
            "--nats", pipeline.nats_url, "--wait", "60"]  # fmt: skip
    assert main(good) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.endswith("accepted: 3 observations of " + line.split(".")[0])
    # No copy of the dataset where the producer looks: the CLI cannot know, the producer refuses it.
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    bad = ["submit", "--dataset", "RTE", "--task", "classify", "--mirror", str(empty), "--nats", pipeline.nats_url,
           "--wait", "60"]  # fmt: skip
    assert main(bad) == 1
    out = capsys.readouterr()
    assert "  rejected: no mirror of RTE in " in out.out
    assert out.err.splitlines()[-1] == "introspect: 1 rejected, 0 not yet taken by a producer"


def test_submit_a_grid_then_status_and_results(tmp_path, capsys, pipeline: LocalPipeline) -> None:
    argv = ["submit", "--dataset", "IMDB", "RTE", "--task", "classify", "answerable", "--variant", "none",
            "--variant", "c-persona-you", "--mirror", str(DATASET_MIRROR), "--limit", "5",
            "--nats", pipeline.nats_url]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr()
    job_ids = out.out.split()
    assert len(job_ids) == 8 and "submitted 8 job(s)" in out.err
    assert any("_t-answerable_c-c-persona-you_" in job_id for job_id in job_ids)
    wait_complete(pipeline, job_ids, timeout=60)

    assert main(["status", "--aggregator", pipeline.aggregator_url]) == 0
    status = capsys.readouterr().out
    assert status.count("5/5  complete") == 8 and "accuracy" in status

    assert main(["results", job_ids[0], "--aggregator", pipeline.aggregator_url]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert main(["results", job_ids[0], "--format", "json", "--aggregator", pipeline.aggregator_url]) == 0
    assert json.loads(capsys.readouterr().out)["results"]["total"] == 5
    parquet = tmp_path / "records.parquet"
    argv = [
        "results",
        job_ids[0],
        "--format",
        "parquet",
        "--out",
        str(parquet),
        "--aggregator",
        pipeline.aggregator_url,
    ]
    assert main(argv) == 0
    assert len(pd.read_parquet(parquet)) == 5

    assert main(["results", "no-such-job", "--aggregator", pipeline.aggregator_url]) == 2
    assert capsys.readouterr().err.startswith("introspect: error: no job 'no-such-job' (the aggregator knows 8 job(s)")
    assert main(["results", job_ids[0][:-4], "--aggregator", pipeline.aggregator_url]) == 0  # a unique prefix


def test_offline_the_gateway_answers_from_its_cache_alone(tmp_path) -> None:
    job = Job(job_id="", model="llama2-7b", dataset="RTE", task="importance", mirror=str(DATASET_MIRROR))
    with LocalPipeline(tmp_path / "run") as pipeline:
        (first,) = submit_jobs(pipeline, [job])
        first_status = wait_complete(pipeline, [first.job_id])[first.job_id]
        assert standin_stats(pipeline)["generated"] > 0

    with LocalPipeline(tmp_path / "run", offline=True) as offline:
        assert "standin" not in offline.processes  # no model server at all
        (again,) = submit_jobs(offline, [job])
        assert wait_complete(offline, [again.job_id])[again.job_id]["results"] == first_status["results"]

        uncached = Job(job_id="", model="llama2-7b", dataset="RTE", task="classify", mirror=str(DATASET_MIRROR), seed=1)
        submit_jobs(offline, [uncached])
        letters = []
        for _ in range(200):
            letters = asyncio.run(dead_letters(Settings(nats_url=offline.nats_url), "gateway"))
            if len(letters) == 12:
                break
            time.sleep(0.1)
        assert len(letters) == 12 and all("offline" in letter.reason for _, letter in letters)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "gateway", "--partition", "2", "--partitions", "2"], "partition 2 is outside 0..1"),
        (["submit", "--dataset", "IMDB", "--task", "classify", "--model", "gpt-9"], "unknown model 'gpt-9'"),
        (["submit", "--dataset", "d.csv", "--task", "classify"], "a local data file needs --category"),
    ],
)
def test_service_and_submit_mistakes_are_one_line(argv: list[str], message: str, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("introspect: error: ") and message in err and err.count("\n") == 1


def test_submit_without_a_server_is_one_line(capsys, closed_port: int) -> None:
    argv = ["submit", "--dataset", "IMDB", "--task", "classify", "--nats", f"nats://127.0.0.1:{closed_port}"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("introspect: error: cannot reach") and err.count("\n") == 1


def test_local_paths_travel_absolute(tmp_path, monkeypatch) -> None:
    from services.cli.parser import build_parser, job_from

    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["run", "--dataset", "x.csv", "--category", "sentiment", "--task", "classify",
                                      "--mirror", "m"])  # fmt: skip
    job = job_from(args, args.model, args.dataset, args.task, args.config)
    assert job.dataset == str(tmp_path / "x.csv") and job.mirror == str(tmp_path / "m")
    assert Path(job.dataset).is_absolute()


def test_run_with_an_unreachable_endpoint_names_the_cause_in_one_line(tmp_path, capsys, closed_port: int) -> None:
    argv = ["run", *COMMON, "--endpoint", f"http://127.0.0.1:{closed_port}", "--data-dir", str(tmp_path)]
    assert main(argv) == 1
    err = capsys.readouterr().err.splitlines()[-1]  # at once, before the pipeline starts
    assert err.startswith("introspect: error: nothing answers at http://127.0.0.1:") and "Cannot connect" in err


def test_a_tgi_endpoint_that_is_not_tgi_is_refused_with_the_fix(refusing_server: str, tmp_path, capsys) -> None:
    for command in ("run", "evaluate"):
        argv = [command, *COMMON, "--endpoint", refusing_server, "--out", str(tmp_path / command)]
        assert main(argv + (["--data-dir", str(tmp_path / "d")] if command == "run" else [])) == 1
        err = capsys.readouterr().err.splitlines()[-1]
        assert err == (
            f"introspect: error: {refusing_server} is not a TGI server (GET /info: 404); for an OpenAI-compatible "
            f"server write --endpoint vllm+{refusing_server} (vLLM), sglang+{refusing_server} (SGLang) or "
            f"openai+{refusing_server} (llama.cpp, others)"
        )
    assert not (tmp_path / "d" / "logs").exists()  # nothing was started


def test_evaluate_through_an_openai_compatible_server_equals_tgi(tmp_path, capsys) -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "services.cli", "standin", "--port", str(port)],
                              stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for_port(port, "the stand-in", server, timeout=60)
        for name in ENGINES:
            endpoint = engine_spec(name, f"http://127.0.0.1:{port}")
            assert main(["evaluate", *COMMON, "--endpoint", endpoint, "--out", str(tmp_path / name)]) == 0
            assert f"{endpoint} serves " in capsys.readouterr().err
    finally:
        server.terminate()
        server.wait()
    tgi, *others = (json.loads((tmp_path / name / f"{EXPERIMENT}.json").read_text()) for name in ENGINES)
    assert all(other["results"] == tgi["results"] for other in others)  # the OpenAI route of vLLM, SGLang, llama.cpp


def test_evaluate_with_a_data_dir_answers_from_the_cache_a_run_filled(tmp_path, capsys) -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "services.cli", "standin", "--port", str(port)],
                              stdout=subprocess.DEVNULL)  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    stats_url = f"{endpoint}/stand-in/stats"
    try:
        wait_for_port(port, "the stand-in", server, timeout=60)
        data = ["--data-dir", str(tmp_path / "d")]
        assert (
            main(["run", *COMMON, "--endpoint", endpoint, *data, "--gateways", "2", "--out", str(tmp_path / "run")])
            == 0
        )
        generated = get_json(stats_url)["generated"]
        assert generated > 0
        argv = ["evaluate", *COMMON, "--endpoint", endpoint, *data, "--gateways", "2", "--out", str(tmp_path / "ev")]
        assert main(argv) == 0
        assert get_json(stats_url)["generated"] == generated  # every answer came from the run's cache
        assert main(["evaluate", *COMMON, "--endpoint", endpoint, "--out", str(tmp_path / "fresh")]) == 0
        # Without --data-dir, no cache: every question asked again (repeats too, which a cache answers).
        assert get_json(stats_url)["generated"] >= 2 * generated
    finally:
        server.terminate()
        server.wait()
    capsys.readouterr()
    results = [
        json.loads((tmp_path / name / f"{EXPERIMENT}.json").read_text())["results"] for name in ("run", "ev", "fresh")
    ]
    assert results[0] == results[1] == results[2]
