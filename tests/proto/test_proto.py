"""The wire contract: every message round-trips; bad ones are refused naming the field."""

from __future__ import annotations

import msgpack
import pytest

from proto import (
    MAX_MESSAGE_BYTES,
    MESSAGE_TYPES,
    Answer,
    Chat,
    DeadLetter,
    GenerationReply,
    GenerationRequest,
    InvalidMessage,
    Job,
    JobEvent,
    JobManifest,
    JobProgress,
    ObservationMessage,
    Sampling,
    ScoredResult,
    WorkItem,
    decode,
    encode,
)
from proto import subjects as sub
from services.runtime.settings import InvalidSettings, Settings

CHAT = Chat("llama2-7b", "none", Sampling(stop=["[INST]", "</s>"], seed=3), template={"chat_template": "{{ x }}"})
WORK = WorkItem(
    job_id="j",
    task="counterfactual",
    category="multi-choice",
    config=["e-short"],
    observation={"idx": 4, "label": "a", "paragraph": "p", "question": "q", "choices": ["a", "b"]},
    chat=CHAT,
    answers=[Answer("first", 0.5), Answer("", 0.0, "422: too long")],
)
EXAMPLES = [
    Job(job_id="j", model="llama2-7b", dataset="IMDB", task="classify", config=["m-removed"], limit=5, stop=3),
    JobManifest(Job(job_id="j", model="m", dataset="d", task="t"), "analysis_x", {"seed": 0}, expected=12),
    ObservationMessage(WORK),
    GenerationRequest("Is it positive?", WORK),
    GenerationReply(Answer("yes", 0.25), WORK, cached=True),
    ScoredResult("j", "classify", 4, {"idx": 4, "label": "a", "correct": None}),
    JobEvent("j", "completed", "12 records", 1.5),
    JobProgress("j", published=500, expected=1200),
    DeadLetter("gateway", "introspect.generate.0", "offline", b"\x00\x01", "j:4:request:0", 3, 2.0),
]


def test_every_message_type_has_an_example() -> None:
    assert {type(example).KIND for example in EXAMPLES} == set(MESSAGE_TYPES)


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: m.KIND)
def test_round_trip(message) -> None:
    assert decode(encode(message), type(message)) == message
    assert decode(encode(message)) == message  # any kind, when the caller accepts all


def _body(message, **changes) -> bytes:
    body = msgpack.unpackb(encode(message))
    for path, value in changes.items():
        target = body
        *parents, last = path.split("__")
        for parent in parents:
            target = target[parent]
        if value is KeyError:
            del target[last]
        else:
            target[last] = value
    return msgpack.packb(body)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\xc1", "not msgpack"),
        (msgpack.packb([1, 2]), "message is not a map"),
        (_body(EXAMPLES[0], v=2), "field 'v': schema version 2 is not 1"),
        (_body(EXAMPLES[0], v=KeyError), "schema version None"),
        (_body(EXAMPLES[0], kind="scored-result"), "field 'kind': 'scored-result' is not job"),
        (_body(EXAMPLES[0], model=KeyError), "field 'model' is missing"),
        (_body(EXAMPLES[0], seed="0"), "field 'seed' must be int, got str"),
        (_body(EXAMPLES[0], seed=True), "field 'seed' must be int, got bool"),
        (_body(EXAMPLES[0], config=["a", 1]), "field 'config[1]' must be str, got int"),
        (_body(EXAMPLES[0], columns=["x"]), "field 'columns' must be a map, got a list"),
        (_body(EXAMPLES[0], extra=1), "unknown field 'extra'"),
        (b"\x00" * (MAX_MESSAGE_BYTES + 1), "exceeds"),
        (_body(EXAMPLES[0], kind=["job"]), "field 'kind': ['job'] is not job"),  # unhashable: no TypeError
        (_body(EXAMPLES[0], seed=-1), "field 'seed'"),
        (_body(EXAMPLES[0], limit=2**63), "field 'limit'"),
        (msgpack.packb({"v": 1, "kind": "job"})[:-1] + b"\x91" * 1000 + b"\xc0", "nested too deeply|not msgpack"),
    ],
)
def test_a_bad_job_is_refused_naming_the_field(payload: bytes, message: str) -> None:
    with pytest.raises(InvalidMessage, match=message.replace("(", r"\(").replace("[", r"\[")):
        decode(payload, Job)


def test_nested_fields_are_named_by_their_path() -> None:
    with pytest.raises(InvalidMessage, match=r"field 'work\.chat\.sampling\.top_k' must be int"):
        decode(_body(EXAMPLES[3], work__chat__sampling__top_k=0.5), GenerationRequest)
    with pytest.raises(InvalidMessage, match=r"field 'work\.answers' must be a list"):
        decode(_body(EXAMPLES[4], work__answers={}), GenerationReply)
    with pytest.raises(InvalidMessage, match=r"unknown field 'work\.chat\.colour'"):
        decode(_body(EXAMPLES[3], work__chat__colour="red"), GenerationRequest)


def test_integers_are_accepted_as_floats_and_none_where_optional() -> None:
    reply = decode(_body(EXAMPLES[4], answer__duration=2, answer__error=None), GenerationReply)
    assert reply.answer.duration == 2.0 and isinstance(reply.answer.duration, float)


def test_partitions_are_stable_and_spread() -> None:
    partitions = [sub.partition_of(CHAT, f"question {i}", 4) for i in range(400)]
    assert partitions == [sub.partition_of(CHAT, f"question {i}", 4) for i in range(400)]
    assert set(partitions) == {0, 1, 2, 3}
    assert all(sub.partition_of(CHAT, f"q{i}", 1) == 0 for i in range(20))


def test_consumers_filter_their_own_subjects() -> None:
    mistral = sub.consumer_for("gateway", 3, "mistral-7b")
    assert mistral.filter_subject == sub.generation_subject("mistral-7b", 3) == "introspect.generate.mistral-7b.3"
    assert mistral.durable == "gateway-mistral-7b-3"
    assert sub.consumer_for("gateway", 3).filter_subject == "introspect.generate.*.3"  # every model's partition 3
    assert sub.consumer_for("gateway", 3).durable == "gateway-3"
    streams = {spec.name: spec for spec in sub.STREAMS}
    for service in ("producer", "scorer", "gateway", "aggregator"):
        spec = sub.consumer_for(service)
        assert streams[spec.stream].work_queue
    with pytest.raises(ValueError, match="unknown service"):
        sub.consumer_for("janitor")


def test_any_model_name_becomes_one_subject_token() -> None:
    assert sub.model_route("llama2-7b") == "llama2-7b"
    assert sub.model_route("meta-llama/Llama-3.1-8B Instruct") == "meta-llama_Llama-3_1-8B_Instruct"
    assert sub.generation_subject("a.b>*", 0) == "introspect.generate.a_b__.0"
    assert sub.model_route("") == "_"


def test_a_job_s_progress_has_a_subject_of_its_own_in_the_stream_that_keeps_the_last() -> None:
    job_id = "analysis_m-llama2-7b_d-imdb_s-0.20261128040639-0e1b"
    subject = sub.progress_subject(job_id)
    assert subject.startswith("introspect.progress.analysis_m-llama2-7b_d-imdb_s-0_20261128040639-0e1b-")
    assert subject.count(".") == 2  # one token for the job, whatever its id holds
    assert sub.progress_subject("a.b") != sub.progress_subject("a_b")  # the same once made safe, kept apart
    assert sub.progress_subject("a b>*").count(".") == 2
    streams = {spec.name: spec for spec in sub.STREAMS}
    assert sub.stream_of(subject) == "INTROSPECT_PROGRESS" and streams["INTROSPECT_PROGRESS"].max_msgs_per_subject == 1
    assert sub.stream_of(sub.OBSERVATIONS) == "INTROSPECT_SCORE"
    assert sub.stream_of(sub.generation_subject("llama2-7b", 3)) == "INTROSPECT_GENERATE"
    assert sub.stream_of(sub.dead_letter_subject("producer")) == "INTROSPECT_DEAD"
    with pytest.raises(ValueError, match=r"no stream stores 'elsewhere\.x'"):
        sub.stream_of("elsewhere.x")


def test_settings_from_the_environment_with_flags_on_top() -> None:
    env = {"INTROSPECT_NATS_URL": "nats://n:4222", "INTROSPECT_PARTITIONS": "4", "INTROSPECT_PARTITION": "3",
           "INTROSPECT_BACKENDS": "http://a:80, openai+http://b:8000", "INTROSPECT_OFFLINE": "true",
           "INTROSPECT_ACK_WAIT": "2.5"}  # fmt: skip
    settings = Settings.from_env(env, partition=1, metrics_port=None)
    assert settings.nats_url == "nats://n:4222" and settings.partitions == 4 and settings.partition == 1
    assert settings.backends == ("http://a:80", "openai+http://b:8000") and settings.offline is True
    assert settings.ack_wait == 2.5 and settings.metrics_port == 9090
    assert settings.metrics_host == "127.0.0.1"  # loopback unless told otherwise: the API serves records


def test_the_model_service_setting_keeps_its_former_name() -> None:
    """INTROSPECT_TGI_SERVICE (before vLLM and SGLang) still names the Service, of TGI pods."""
    settings = Settings.from_env({"INTROSPECT_TGI_SERVICE": "research/tgi:http"})
    assert (settings.model_service, settings.model_engine) == ("research/tgi:http", "tgi")
    renamed = {"INTROSPECT_TGI_SERVICE": "research/old", "INTROSPECT_MODEL_SERVICE": "research/vllm",
               "INTROSPECT_MODEL_ENGINE": "vllm"}  # fmt: skip
    settings = Settings.from_env(renamed)
    assert (settings.model_service, settings.model_engine) == ("research/vllm", "vllm")  # the new name wins


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"INTROSPECT_PARTITIONS": "two"}, "INTROSPECT_PARTITIONS must be a whole number"),
        ({"INTROSPECT_OFFLINE": "maybe"}, "INTROSPECT_OFFLINE must be true or false"),
        ({"INTROSPECT_ACK_WAIT": "soon"}, "INTROSPECT_ACK_WAIT must be a number"),
        ({"INTROSPECT_ACK_WAIT": "0"}, "ack_wait must be positive"),
        ({"INTROSPECT_PARTITIONS": "0"}, "partitions must be at least 1"),
        ({"INTROSPECT_PARTITION": "1"}, "partition 1 is outside 0..0"),
        ({"INTROSPECT_MODEL_SERVICE": "tgi-llama"}, "model_service is namespace/name"),
        ({"INTROSPECT_TGI_SERVICE": "tgi-llama"}, "model_service is namespace/name"),  # its former name
        ({"INTROSPECT_MODEL_ENGINE": "ollama"}, "model_engine is one of tgi, vllm, sglang, openai, got 'ollama'"),
        ({"INTROSPECT_CACHE_ON_DAMAGE": "delete"}, "cache_on_damage is refuse or set-aside, got 'delete'"),
    ],
)
def test_bad_settings_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidSettings, match=message):
        Settings.from_env(env)


def test_an_index_or_count_outside_a_signed_64_bit_number_is_refused() -> None:
    """A store keys records by a signed 64-bit idx: 2**63 passed decoding once, then failed
    every delivery at the store (the "might work later" path, 20 times)."""
    result = next(m for m in EXAMPLES if m.KIND == "scored-result")
    for idx in (-1, 2**63, 2**64 - 1):
        with pytest.raises(InvalidMessage, match="field 'idx'"):
            decode(_body(result, idx=idx), type(result))
    manifest = next(m for m in EXAMPLES if m.KIND == "job-manifest")
    with pytest.raises(InvalidMessage, match="field 'expected'"):
        decode(_body(manifest, expected=-3), type(manifest))
