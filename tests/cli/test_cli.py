"""The `introspect` command: the in-process experiment, and one-line errors for mistakes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest

from services.cli import main
from tests.conftest import DATASET_MIRROR


def test_evaluate_prints_results_and_writes_the_paper_json_and_records(tmp_path, capsys) -> None:
    code = main(
        ["evaluate", "--dataset", "RTE", "--task", "importance", "--config", "m-removed", "--limit", "8",
         "--mirror", str(DATASET_MIRROR), "--out", str(tmp_path)]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr()
    assert "stand-in" in out.err
    experiment = "analysis_m-llama2-7b_y-none_d-rte_p-test_t-importance_c-m-removed_s-0"
    result = json.loads((tmp_path / f"{experiment}.json").read_text())
    assert result["args"]["task_config"] == ["m-removed"]
    assert result["results"]["total"] == 8
    assert f"total  {result['results']['total']}" in out.out and "faithfulness" in out.out
    records = pd.read_parquet(tmp_path / f"{experiment}.parquet")
    assert len(records) == 8 and "explain_predict" in records.columns
    assert all("[REMOVED]" in p for p in records["predict_prompt"]) is True


def test_evaluate_a_local_file(tmp_path, capsys) -> None:
    data = tmp_path / "reviews.csv"
    pd.DataFrame({"review": ["Great fun.", "Awful."], "stars": ["5", "1"]}).to_csv(data, index=False)
    code = main(
        ["evaluate", "--dataset", str(data), "--category", "sentiment", "--task", "classify",
         "--column", "text=review", "--column", "label=stars", "--label", "5=positive", "--label", "1=negative",
         "--model", "falcon-7b", "--out", str(tmp_path)]
    )  # fmt: skip
    assert code == 0
    assert (tmp_path / "analysis_m-falcon-7b_y-default_d-reviews_p-test_t-classify_c-_s-0.json").is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["evaluate", "--dataset", "FOO", "--task", "classify"], "unknown dataset 'FOO'"),
        (["evaluate", "--dataset", "IMDB", "--task", "classify", "--config", "x"], "unknown task option 'x'"),
        (["evaluate", "--dataset", "IMDB", "--task", "classify", "--model", "gpt-9"], "unknown model 'gpt-9'"),
        (["evaluate", "--dataset", "IMDB", "--task", "classify", "--model", "mistral-v1-7b", "--system-message", "Hi"],
         "does not support a system message"),
        (["evaluate", "--dataset", "data.csv", "--task", "classify"], "needs --category"),
        (["evaluate", "--dataset", "data.csv", "--category", "sentiment", "--task", "classify", "--column", "text"],
         "must look like NAME=VALUE"),
    ],
)  # fmt: skip
def test_mistakes_get_one_line(argv: list[str], message: str, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("introspect: error: ") and message in err and err.count("\n") == 1


def test_an_unreadable_dataset_is_one_line(tmp_path, capsys) -> None:
    assert main(["evaluate", "--dataset", "RTE", "--task", "classify", "--mirror", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith("introspect: error: no mirror of RTE")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--task", "summarise"], "argument --task: invalid choice"),
        (["--task", "classify", "--concurrency", "0"], "argument --concurrency: must be at least 1, got 0"),
        (["--task", "classify", "--seed", "-1"], "argument --seed: must be at least 0"),
        (["--task", "classify", "--limit", "ten"], "argument --limit: 'ten' is not a whole number"),
    ],
)
def test_argument_errors_are_one_line(extra: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--dataset", "IMDB", *extra])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"introspect: error: {message}") and err.count("\n") == 1


def test_tasks_and_render(capsys) -> None:
    assert main(["tasks"]) == 0
    assert "e-implcit-target" in capsys.readouterr().out
    assert main(["render", "What is 1 + 1?", "--model", "falcon-7b", "--system-message", "none"]) == 0
    assert capsys.readouterr().out == "User: What is 1 + 1?\nFalcon:\n"


def test_the_installed_command_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "render", "Hi", "--model", "llama2-7b"], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout == "<s>[INST] Hi [/INST]\n"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_evaluate_against_a_tgi_endpoint_matches_the_in_process_stand_in(tmp_path, capsys) -> None:
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "standin", "--port", str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert "not a language model" in server.stdout.readline()
        for _ in range(100):  # until it accepts connections
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        common = ["evaluate", "--dataset", "bAbI-1", "--task", "redacted", "--mirror", str(DATASET_MIRROR)]
        assert main([*common, "--endpoint", f"http://127.0.0.1:{port}", "--out", str(tmp_path / "http")]) == 0
        assert f"answers from http://127.0.0.1:{port}" in capsys.readouterr().err
        assert main([*common, "--out", str(tmp_path / "local")]) == 0
    finally:
        server.terminate()
        server.wait(timeout=10)
    name = "analysis_m-llama2-7b_y-none_d-babi-1_p-test_t-redacted_c-_s-0"
    over_http = pd.read_parquet(tmp_path / "http" / f"{name}.parquet").drop(columns="duration")
    in_process = pd.read_parquet(tmp_path / "local" / f"{name}.parquet").drop(columns="duration")
    pd.testing.assert_frame_equal(over_http, in_process)


def test_an_index_range_selects_positions_of_the_shuffled_split(tmp_path) -> None:
    common = ["evaluate", "--dataset", "RTE", "--task", "classify", "--mirror", str(DATASET_MIRROR)]
    assert main([*common, "--out", str(tmp_path / "all")]) == 0
    assert main([*common, "--start", "2", "--stop", "5", "--out", str(tmp_path / "part")]) == 0
    name = "analysis_m-llama2-7b_y-none_d-rte_p-test_t-classify_c-_s-0.parquet"
    everything = pd.read_parquet(tmp_path / "all" / name)
    part = pd.read_parquet(tmp_path / "part" / name)
    assert list(part["idx"]) == list(everything["idx"][2:5])


def test_a_backwards_index_range_is_one_line(capsys) -> None:
    argv = ["evaluate", "--dataset", "RTE", "--task", "classify", "--start", "5", "--stop", "2"]
    assert main(argv) == 2
    assert capsys.readouterr().err == "introspect: error: bad selection: limit=None, start=5, stop=2\n"


@pytest.mark.parametrize("argv", [["status"], ["results", "nope"], ["results", "nope", "--format", "json"]])
def test_an_aggregator_error_is_one_line(refusing_server: str, capsys, argv: list[str]) -> None:
    assert main([*argv, "--aggregator", refusing_server]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("introspect: error: ") and "no job 'nope'" in err


def test_no_nats_at_the_url_names_the_url(capsys, closed_port: int) -> None:
    url = f"nats://127.0.0.1:{closed_port}"
    assert main(["submit", "--dataset", "IMDB", "--task", "classify", "--nats", url]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"introspect: error: cannot reach NATS at {url} (is it running? --nats or INTROSPECT_NATS_URL)"
    )


def test_a_gateway_without_a_model_server_says_so(tmp_path, capsys) -> None:
    assert main(["serve", "gateway", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("introspect: error: the gateway has no model server: give --backend URL") and "--offline" in err
    )


def test_a_metrics_port_in_use_is_one_line(nats_server, tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "services.cli", "serve", "scorer", "--nats", nats_server.url,
             "--metrics-port", str(port)],
            capture_output=True, text=True, timeout=120, env={**os.environ, "INTROSPECT_METRICS_HOST": "127.0.0.1"},
        )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        f"introspect: error: port {port} on 127.0.0.1 is in use; give the scorer another with --metrics-port "
        "or INTROSPECT_METRICS_PORT"
    )


@pytest.mark.parametrize(
    ("template", "message"),
    [("{% for m in messages %}{{ m.content }", "the chat_template is not valid Jinja: unexpected '}' (line 1)"),
     ("{{ raise_exception('only two roles') }}", "the chat_template failed to render: only two roles"),
     ("{{ messages[0].nothing.deeper }}", "the chat_template failed to render: ")],
)  # fmt: skip
@pytest.mark.parametrize("command", ["render", "evaluate"])
def test_a_broken_chat_template_is_one_line(tmp_path, capsys, template: str, message: str, command: str) -> None:
    folder = tmp_path / "broken-model"
    folder.mkdir()
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": template, "eos_token": "</s>"}))
    argv = {"render": ["render", "Hi", "--model", str(folder)],
            "evaluate": ["evaluate", "--model", str(folder), "--dataset", "IMDB", "--task", "classify",
                         "--mirror", str(DATASET_MIRROR), "--out", str(tmp_path / "out")]}[command]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"introspect: error: broken-model: {message}")


def test_a_damaged_gateway_cache_is_one_line_that_says_how_to_start_afresh(nats_server, tmp_path) -> None:
    from services.gateway.cache import GenerationCache

    folder = tmp_path / "cache" / "partition-0"
    GenerationCache(folder).close()
    next(folder.glob("MANIFEST-*")).write_bytes(b"not a manifest")
    command = [sys.executable, "-m", "services.cli", "serve", "gateway", "--nats", nats_server.url,
               "--data-dir", str(tmp_path), "--metrics-port", "0", "--backend", "http://127.0.0.1:9"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    last = done.stderr.splitlines()[-1]
    assert last.startswith(f"introspect: error: the gateway cache at {folder} cannot be opened (Corruption: ")
    assert last.endswith("start on an empty cache with INTROSPECT_CACHE_ON_DAMAGE=set-aside "
                         "(the damaged folder is kept beside it), or move the folder away")  # fmt: skip
