"""Several models in one deployment: each job's questions go to its own model's gateways."""

from __future__ import annotations

from pathlib import Path

from proto import Chat, GenerationRequest, Job, JobEvent, Sampling, WorkItem
from services.gateway.service import Gateway
from services.models import model_name
from services.producer.service import Producer
from services.runtime.memory import MemoryBus
from tests.support.messages import ANYWHERE


def test_a_model_has_one_name_however_it_is_given() -> None:
    assert model_name("llama2-7b") == "llama2-7b"
    assert model_name("meta-llama/Llama-2-7b-chat-hf") == "llama2-7b"
    assert model_name("tests/fixtures/models/smollm2-135m-instruct") == "smollm2-135m-instruct"
    assert model_name("models/tiny/tokenizer_config.json") == "tiny"


async def test_the_producer_refuses_a_job_for_a_model_no_gateway_serves() -> None:
    producer, bus = (
        Producer(served_models=("meta-llama/Llama-2-7b-chat-hf", "falcon-7b"), data_roots=ANYWHERE),
        MemoryBus(),
    )
    job = Job("j1", "mistral-v2-7b", "IMDB", "classify")
    (event,) = [o.message for o in await bus.deliver(producer, job)]
    assert isinstance(event, JobEvent) and event.event == "rejected" and "mistral-v2-7b" in event.detail
    (letter,) = bus.dead_letters
    assert letter.message == job and letter.category == "bad-job"
    assert "no gateway serves model 'mistral-v2-7b' (served: falcon-7b, llama2-7b)" in letter.reason


async def test_a_gateway_serves_its_own_model_and_refuses_another(tmp_path: Path) -> None:
    gateway = Gateway(tmp_path, backends=(), partition=2, offline=True, model="meta-llama/Llama-2-7b-chat-hf")
    assert gateway.consumer().durable == "gateway-llama2-7b-2"
    assert gateway.consumer().filter_subject == "introspect.generate.llama2-7b.2"
    chat = Chat("mistral-v2-7b", "none", Sampling())
    request = GenerationRequest("Is it positive?", WorkItem("j1", "classify", "sentiment", [], {"idx": 0}, chat))
    bus = MemoryBus()
    assert await bus.deliver(gateway, request) == []
    (letter,) = bus.dead_letters
    assert letter.category == "wrong-model"
    assert "a request for 'mistral-v2-7b' reached the gateway of 'llama2-7b'" in letter.reason
