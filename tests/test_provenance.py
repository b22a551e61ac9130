"""Result provenance: written in both files, never a silent overwrite, and durations that count
only generations a server computed. In process and on the in-memory bus; the pipeline's own
run is in tests/e2e/test_provenance.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pyarrow.parquet as pq
import pytest

from proto import (
    AnswerSource,
    GenerationReply,
    GenerationRequest,
    InvalidMessage,
    JobEvent,
    ScoredResult,
    decode,
    encode,
    replace,
)
from services.aggregator.service import Aggregator
from services.backends.contract import Completion
from services.cli.commands import main
from services.core.chat import GenerationParameters
from services.core.replay import Generation
from services.gateway.cache import CachedCompletions, GenerationCache
from services.generation import ChatModel
from services.jobs import prepare_job
from services.provenance import (
    DURATIONS_COMPUTED,
    answer_source,
    build,
    conditions,
    endpoint_of,
    package_version,
)
from services.result_files import ResultNotReplaced, place_result, write_result_files
from services.runner import evaluate
from services.runtime.memory import MemoryBus
from services.scorer.service import Scorer
from services.wire import answer_of
from tests.aggregator.test_handlers import _manifest, _result
from tests.conftest import DATASET_MIRROR
from tests.support.messages import JOB
from tests.support.messages import work as _work

EVALUATE = ["evaluate", "--dataset", "IMDB", "--task", "counterfactual", "--mirror", str(DATASET_MIRROR)]
EXPERIMENT = "analysis_m-llama2-7b_y-none_d-imdb_p-test_t-counterfactual_c-_s-0"
REAL_SOURCE = AnswerSource("tgi", "tgi-0:80", "meta-llama/Llama-2-7b-chat-hf")


def _files(out: Path, name: str = EXPERIMENT) -> tuple[dict[str, Any], dict[str, Any]]:
    """The result JSON and the provenance in the Parquet file's schema metadata."""
    result = json.loads((out / f"{name}.json").read_text())
    metadata = pq.read_schema(out / f"{name}.parquet").metadata
    return result, json.loads(metadata[b"provenance"])


def _write_real_result(out: Path, limit: int | None = None) -> dict[str, Any]:
    """A result in `out` as a run against a real TGI server would have written it."""
    job = replace(JOB, task="counterfactual", limit=limit)
    prepared = prepare_job(job)
    provenance = build(job=job, chat=prepared.chat, sources=[REAL_SOURCE], started_at=1.0, finished_at=2.0,
                       written_by="introspect evaluate")  # fmt: skip
    from services.core.results import Aggregate

    write_result_files(out, prepared.experiment, Aggregate("counterfactual"), 0.5, [], provenance)
    return provenance


# -- what is written --


def test_evaluate_writes_provenance_in_the_json_and_the_parquet_metadata(tmp_path: Path, capsys) -> None:
    assert main([*EVALUATE, "--limit", "3", "--start", "1", "--out", str(tmp_path)]) == 0
    result, in_parquet = _files(tmp_path)
    assert list(result) == ["args", "results", "durations", "provenance"]  # the paper's keys first, as they were
    assert set(result["durations"]) == {"setup", "eval"}
    provenance = result["provenance"]
    assert in_parquet == provenance
    assert provenance["stand_in"] is True
    assert provenance["answers_from"] == [
        {"backend": "stand-in", "endpoint": "in-process", "model_id": "introspect-stand-in"}
    ]
    assert provenance["served_model_id"] == "introspect-stand-in"
    assert provenance["model"] == "llama2-7b"
    assert provenance["chat_template"] == {"name": "Llama2"}
    assert provenance["system_message"] == {"choice": "none", "text": None}  # the paper's choice for Llama2
    assert provenance["sampling"] == {"temperature": 0.1, "top_p": 0.95, "repetition_penalty": 1.2, "top_k": 50,
                                      "max_new_tokens": 1024, "stop": ["[INST]", "[/INST]", "<s>", "</s>"],
                                      "seed": 0}  # fmt: skip
    assert provenance["selection"] == {"limit": 3, "start": 1, "stop": None}
    assert provenance["package"] == {"name": "introspect", "version": package_version()}
    assert provenance["started_at"] <= provenance["finished_at"]  # ISO 8601, UTC: they sort as times
    assert provenance["started_at"].endswith("+00:00")
    assert provenance["durations"] == DURATIONS_COMPUTED
    assert "cache" in provenance["durations"]["eval"] and "counts 0" in provenance["durations"]["eval"]


def test_a_model_s_own_template_is_named_by_the_sha256_of_its_jinja_source(tmp_path: Path) -> None:
    import hashlib

    folder = Path(__file__).parent / "fixtures" / "models" / "smollm2-135m-instruct"
    source = json.loads((folder / "tokenizer_config.json").read_text())["chat_template"]
    prepared = prepare_job(replace(JOB, model=str(folder)))
    provenance = build(job=prepared.job, chat=prepared.chat, sources=[], started_at=None, finished_at=2.0,
                       written_by="test")  # fmt: skip
    assert provenance["chat_template"] == {"name": "jinja", "sha256": hashlib.sha256(source.encode()).hexdigest()}
    assert provenance["started_at"] is None and provenance["served_model_id"] is None


def test_a_custom_system_message_and_the_default_text_are_recorded() -> None:
    falcon = prepare_job(replace(JOB, model="falcon-7b"))  # the paper's default for Falcon: its own message
    provenance = build(job=falcon.job, chat=falcon.chat, sources=[], started_at=None, finished_at=1.0, written_by="t")
    assert provenance["system_message"]["choice"] == "default"
    assert provenance["system_message"]["text"].startswith("The following is a conversation")
    custom = prepare_job(replace(JOB, system_message="Be brief."))
    provenance = build(job=custom.job, chat=custom.chat, sources=[], started_at=None, finished_at=1.0, written_by="t")
    assert provenance["system_message"] == {"choice": "custom", "text": "Be brief."}


def test_where_answers_come_from_never_includes_credentials() -> None:
    assert endpoint_of("http://user:secret@tgi-0.models:8080/generate?key=x") == "tgi-0.models:8080"
    assert endpoint_of("openai+https://token@api.example") == "api.example:443"
    assert endpoint_of("http://[::1]:9000") == "[::1]:9000"
    pool = answer_source(["http://a:secret@tgi-1:80", "http://tgi-0:80"], "meta-llama/Llama-2-7b-chat-hf")
    assert pool == AnswerSource("tgi", "tgi-0:80,tgi-1:80", "meta-llama/Llama-2-7b-chat-hf")
    assert "secret" not in repr(pool)
    assert answer_source(["openai+http://vllm:8000"], "m").backend == "openai-compatible"
    for spec in ("vllm+http://vllm:8000", "sglang+http://sglang:30000"):
        assert answer_source([spec], "m") == AnswerSource("openai-compatible", endpoint_of(spec), "m")
    assert endpoint_of("vllm+http://user:secret@vllm:8000") == "vllm:8000"
    assert answer_source(["http://127.0.0.1:5"], "introspect-stand-in").backend == "stand-in"
    assert answer_source([], "m", service="research/tgi:80") == AnswerSource("tgi", "research/tgi:80", "m")
    vllm = answer_source([], "m", service="research/vllm:http", engine="vllm")
    assert vllm == AnswerSource("openai-compatible", "research/vllm:http", "m")


# -- no silent overwrite --


def test_the_same_experiment_under_the_same_conditions_replaces_its_result(tmp_path: Path) -> None:
    assert main([*EVALUATE, "--limit", "3", "--out", str(tmp_path)]) == 0
    first, _ = _files(tmp_path)
    assert main([*EVALUATE, "--limit", "3", "--out", str(tmp_path)]) == 0
    again, _ = _files(tmp_path)
    assert conditions(again["provenance"]) == conditions(first["provenance"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{EXPERIMENT}.json", f"{EXPERIMENT}.parquet"]


def test_a_limited_run_never_silently_replaces_a_full_one(tmp_path: Path, capsys) -> None:
    assert main([*EVALUATE, "--limit", "4", "--out", str(tmp_path)]) == 0
    before = (tmp_path / f"{EXPERIMENT}.json").read_bytes()
    capsys.readouterr()

    assert main([*EVALUATE, "--limit", "2", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("introspect: error: ")
    assert "holds a result of other provenance (selection:" in err and "--force replaces it" in err
    assert "observations" not in err  # refused before the job was run, not after
    assert (tmp_path / f"{EXPERIMENT}.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{EXPERIMENT}.json", f"{EXPERIMENT}.parquet"]

    assert main([*EVALUATE, "--limit", "2", "--force", "--out", str(tmp_path)]) == 0
    result, in_parquet = _files(tmp_path)
    assert result["results"]["total"] == 2 and in_parquet["selection"]["limit"] == 2


def test_a_stand_in_result_never_replaces_a_real_one_even_with_force(tmp_path: Path, capsys) -> None:
    real = _write_real_result(tmp_path, limit=3)
    before = (tmp_path / f"{EXPERIMENT}.json").read_bytes()
    for force in ([], ["--force"]):
        assert main([*EVALUATE, "--limit", "3", *force, "--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert "may be a real model's; a stand-in result never replaces it" in err and "--out" in err
    assert (tmp_path / f"{EXPERIMENT}.json").read_bytes() == before
    assert _files(tmp_path)[1] == real


def test_a_result_without_provenance_is_protected_as_possibly_real(tmp_path: Path, capsys) -> None:
    (tmp_path / f"{EXPERIMENT}.json").write_text(json.dumps({"args": {}, "results": {}, "durations": {}}))
    assert main([*EVALUATE, "--limit", "3", "--force", "--out", str(tmp_path)]) == 2
    assert "a stand-in result never replaces it" in capsys.readouterr().err
    prepared = prepare_job(replace(JOB, task="counterfactual"))
    real = build(job=prepared.job, chat=prepared.chat, sources=[REAL_SOURCE], started_at=None, finished_at=1.0,
                 written_by="t")  # fmt: skip
    with pytest.raises(ResultNotReplaced, match="provenance: none recorded"):
        place_result(tmp_path, prepared.experiment, real)
    assert place_result(tmp_path, prepared.experiment, real, force=True).result == tmp_path / f"{EXPERIMENT}.json"


def test_a_parquet_file_alone_still_says_its_provenance(tmp_path: Path) -> None:
    real = _write_real_result(tmp_path)
    (tmp_path / f"{EXPERIMENT}.json").unlink()  # lost: the records' metadata still protects them
    prepared = prepare_job(replace(JOB, task="counterfactual", limit=3))
    other = build(job=prepared.job, chat=prepared.chat, sources=[REAL_SOURCE], started_at=None, finished_at=1.0,
                  written_by="t")  # fmt: skip
    with pytest.raises(ResultNotReplaced, match=r"selection: \{.*\} -> \{"):
        place_result(tmp_path, prepared.experiment, other)
    assert place_result(tmp_path, prepared.experiment, real).note is None


def test_where_and_when_it_ran_are_not_conditions(tmp_path: Path) -> None:
    real = _write_real_result(tmp_path)
    moved = {**real, "answers_from": [{**real["answers_from"][0], "endpoint": "tgi-9:80"}],
             "started_at": "2030-01-01T00:00:00+00:00", "package": {"name": "introspect", "version": "9"}}  # fmt: skip
    prepared = prepare_job(replace(JOB, task="counterfactual"))
    assert place_result(tmp_path, prepared.experiment, moved).note is None  # replaces: the same experiment
    other_model = {**real, "served_model_id": "meta-llama/Llama-2-13b-chat-hf"}
    with pytest.raises(ResultNotReplaced, match="served_model_id"):
        place_result(tmp_path, prepared.experiment, other_model)


# -- the aggregator: never refuses, writes beside --


async def _run_job(aggregator: Aggregator, bus: MemoryBus, job_id: str, sources: list[AnswerSource]) -> JobEvent:
    manifest = _manifest(job_id, 2)
    chat = prepare_job(manifest.job).chat
    await bus.deliver(aggregator, replace(manifest, chat=chat, started_at=1_700_000_000.0))
    await bus.deliver(aggregator, replace(_result(job_id, 0), sources=sources))
    (completed,) = await bus.deliver(aggregator, replace(_result(job_id, 1), sources=sources))
    assert isinstance(completed.message, JobEvent)
    return completed.message


async def test_the_aggregator_writes_provenance_and_puts_a_stand_in_result_beside_a_real_one(tmp_path: Path) -> None:
    aggregator, bus = Aggregator(tmp_path), MemoryBus()
    results = tmp_path / "results"
    experiment = _manifest("x", 2).experiment_id
    await aggregator.start(bus)
    try:
        real = await _run_job(aggregator, bus, f"{experiment}.20260101000000-aaaa", [REAL_SOURCE])
        standin = AnswerSource("stand-in", "127.0.0.1:40000", "introspect-stand-in")
        beside = await _run_job(aggregator, bus, f"{experiment}.20260102000000-bbbb", [standin])
    finally:
        await aggregator.close()
    assert "beside" not in real.detail
    written, in_parquet = _files(results, experiment)
    assert written["provenance"] == in_parquet
    assert written["provenance"]["answers_from"] == [
        {"backend": "tgi", "endpoint": "tgi-0:80", "model_id": "meta-llama/Llama-2-7b-chat-hf"}
    ]
    assert written["provenance"]["stand_in"] is False
    assert written["provenance"]["selection"] == {"limit": 3, "start": 0, "stop": None}
    assert written["provenance"]["started_at"] == "2023-11-14T22:13:20+00:00"
    assert written["provenance"]["written_by"] == "introspect aggregator"

    # The stand-in's job completed all the same, beside the real result, and says so.
    name = f"{experiment}.20260102000000-bbbb"
    assert f"written beside it as {name}.json" in beside.detail and "may be a real model's" in beside.detail
    assert _files(results, name)[1]["stand_in"] is True
    assert _files(results, experiment)[1]["stand_in"] is False  # the real result untouched
    status = aggregator.jobs[f"{experiment}.20260102000000-bbbb"].status()
    assert status["result_file"] == str(results / f"{name}.json") and "beside" in status["result_note"]


async def test_a_job_s_answer_sources_survive_a_restart_of_the_aggregator(tmp_path: Path) -> None:
    aggregator, bus = Aggregator(tmp_path), MemoryBus()
    manifest = _manifest("j1", 2)
    await aggregator.start(bus)
    try:
        await bus.deliver(aggregator, replace(manifest, chat=prepare_job(manifest.job).chat))
        await bus.deliver(aggregator, replace(_result("j1", 0), sources=[REAL_SOURCE]))
    finally:
        await aggregator.close()
    restarted = Aggregator(tmp_path)
    await restarted.start(bus)
    try:
        await bus.deliver(restarted, _result("j1", 1))  # from an older scorer: no sources
    finally:
        await restarted.close()
    written = json.loads(Path(restarted.jobs["j1"].status()["result_file"]).read_text())
    assert written["provenance"]["answers_from"][0]["endpoint"] == "tgi-0:80"


async def test_a_manifest_from_before_provenance_still_finishes_with_what_is_known(tmp_path: Path) -> None:
    aggregator, bus = Aggregator(tmp_path), MemoryBus()
    await aggregator.start(bus)
    try:
        await bus.deliver(aggregator, _manifest("j1", 1))  # no chat, no start time
        await bus.deliver(aggregator, _result("j1", 0))
    finally:
        await aggregator.close()
    provenance = json.loads(Path(aggregator.jobs["j1"].status()["result_file"]).read_text())["provenance"]
    assert provenance["chat_template"] is None and provenance["sampling"] is None
    assert provenance["answers_from"] == [] and provenance["model"] == "llama2-7b"


# -- the wire: the gateway's part, carried through the scorer, bounded --


async def test_the_scorer_carries_each_reply_s_source_into_the_scored_result() -> None:
    bus, scorer = MemoryBus(), Scorer()
    work = _work(task="answerable")
    other = AnswerSource("tgi", "tgi-1:80", REAL_SOURCE.model_id)
    (ask,) = await bus.deliver(scorer, GenerationReply(answer_of(Generation("positive")), work, source=REAL_SOURCE))
    request = ask.message
    assert request.work.sources == [REAL_SOURCE]
    reply = GenerationReply(answer_of(Generation("yes")), request.work, source=other)
    (done,) = await bus.deliver(scorer, reply)
    assert isinstance(done.message, ScoredResult) and done.message.sources == [REAL_SOURCE, other]


def test_answer_sources_are_validated_and_bounded_at_decoding() -> None:
    reply = GenerationReply(answer_of(Generation("positive")), _work(), source=REAL_SOURCE)
    assert decode(encode(reply), GenerationReply) == reply
    for bad, field in (
        (replace(REAL_SOURCE, backend="gpt"), "source.backend"),  # type: ignore[arg-type]
        (replace(REAL_SOURCE, endpoint="x" * 257), "source.endpoint"),
    ):
        with pytest.raises(InvalidMessage, match=field.replace(".", r"\.")):
            decode(encode(replace(reply, source=bad)), GenerationReply)
    too_many = msgspec.msgpack.encode({**msgspec.to_builtins(_result("j1", 0)), "sources": [REAL_SOURCE] * 5})
    with pytest.raises(InvalidMessage, match="sources"):
        decode(too_many, ScoredResult)
    # A work item with no sources leaves the field out, so a gateway older than it reads it.
    request = msgspec.msgpack.decode(encode(GenerationRequest("What?", _work())))
    assert "sources" not in request["work"]
    older = msgspec.to_builtins(reply)
    del older["source"]
    assert decode(msgspec.msgpack.encode(older), GenerationReply).source is None  # an older gateway's reply


# -- durations: only what a server computed --


class _TimedServer:
    """A completion function that reports 0.5 s of inference for every prompt it is asked."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, prompt: str, parameters: GenerationParameters) -> Completion:
        self.calls += 1
        return Completion(f"positive {len(prompt)}", seconds=0.5)


async def test_a_warm_re_run_counts_no_duration_and_a_cold_one_does(tmp_path: Path) -> None:
    prepared = prepare_job(replace(JOB, task="counterfactual"))
    observations = prepared.load_observations()
    server = _TimedServer()
    cache = GenerationCache(tmp_path / "cache")
    try:
        completions = CachedCompletions(cache, "model-x", server)
        model = ChatModel(prepared.model.chat_format, prepared.system, prepared.parameters, completions)
        cold, cold_total = await evaluate(prepared.task, observations, model.generate)
        computed = server.calls
        warm, warm_total = await evaluate(prepared.task, observations, model.generate)
    finally:
        cache.close()
    assert server.calls == computed > 0  # the warm run asked the server nothing
    assert cold_total.duration == pytest.approx(0.5 * computed) and cold_total.duration > 0
    assert warm_total.duration == 0 and all(record.duration == 0 for record in warm)
    assert [r.predict for r in warm] == [r.predict for r in cold]  # the same answers, from the cache


async def test_a_request_joined_to_an_identical_one_in_flight_costs_nothing(tmp_path: Path) -> None:
    import asyncio

    release = asyncio.Event()

    async def slow(prompt: str, parameters: GenerationParameters) -> Completion:
        await release.wait()
        return Completion("positive", seconds=0.5)

    cache = GenerationCache(tmp_path / "cache")
    try:
        completions = CachedCompletions(cache, "model-x", slow)
        first = asyncio.ensure_future(completions("p", GenerationParameters()))
        await asyncio.sleep(0)
        joined = asyncio.ensure_future(completions("p", GenerationParameters()))
        await asyncio.sleep(0)
        release.set()
        computed, shared = await first, await joined
    finally:
        cache.close()
    assert (computed.cached, computed.seconds) == (False, 0.5)
    assert shared.cached is True  # so ChatModel.generate gives it a duration of 0


async def test_the_gateway_s_path_gives_a_cached_answer_no_duration(tmp_path: Path) -> None:
    cache = GenerationCache(tmp_path / "cache")
    try:
        completions = CachedCompletions(cache, "model-x", _TimedServer())
        prepared = prepare_job(JOB)
        model = ChatModel(prepared.model.chat_format, prepared.system, prepared.parameters, completions)
        cold, warm = await model.generate("What?"), await model.generate("What?")
    finally:
        cache.close()
    assert (cold.duration, cold.cached) == (0.5, False)
    assert (warm.duration, warm.cached) == (0.0, True)
    assert answer_of(warm).duration == 0.0  # what the gateway's reply carries
