"""Several models in one deployment: each job's questions go to its own model's gateways."""

from __future__ import annotations

from pathlib import Path

import pytest

from proto import Chat, GenerationRequest, Job, JobEvent, Sampling, WorkItem
from services.gateway.service import Gateway
from services.models import model_name
from services.producer.service import Producer
from services.runtime.bus import Outgoing, Reject


class RecordingBus:
    """Stands in for the NATS helper where a handler is tested alone: keeps what it is given."""

    def __init__(self) -> None:
        self.published: list[Outgoing] = []

    async def publish(self, outgoing, timeout: float = 10.0) -> None:
        self.published += list(outgoing)


def test_a_model_has_one_name_however_it_is_given() -> None:
    assert model_name("llama2-7b") == "llama2-7b"
    assert model_name("meta-llama/Llama-2-7b-chat-hf") == "llama2-7b"
    assert model_name("tests/fixtures/models/smollm2-135m-instruct") == "smollm2-135m-instruct"
    assert model_name("models/tiny/tokenizer_config.json") == "tiny"


async def test_the_producer_refuses_a_job_for_a_model_no_gateway_serves() -> None:
    producer = Producer(served_models=("meta-llama/Llama-2-7b-chat-hf", "falcon-7b"))
    bus = producer.bus = RecordingBus()  # type: ignore[assignment]
    job = Job("j1", "mistral-v2-7b", "IMDB", "classify")
    with pytest.raises(Reject, match=r"no gateway serves model 'mistral-v2-7b' \(served: falcon-7b, llama2-7b\)"):
        await producer.handle(job, None)  # type: ignore[arg-type]
    (event,) = [o.message for o in bus.published]
    assert isinstance(event, JobEvent) and event.event == "rejected" and "mistral-v2-7b" in event.detail


async def test_a_gateway_serves_its_own_model_and_refuses_another(tmp_path: Path) -> None:
    gateway = Gateway(tmp_path, backends=(), partition=2, model="meta-llama/Llama-2-7b-chat-hf")
    assert gateway.consumer().durable == "gateway-llama2-7b-2"
    assert gateway.consumer().filter_subject == "introspect.generate.llama2-7b.2"
    gateway.bus, gateway.cache = RecordingBus(), object()  # type: ignore[assignment]
    chat = Chat("mistral-v2-7b", "none", Sampling())
    request = GenerationRequest("Is it positive?", WorkItem("j1", "classify", "sentiment", [], {"idx": 0}, chat))
    with pytest.raises(Reject, match="a request for 'mistral-v2-7b' reached the gateway of 'llama2-7b'") as rejected:
        await gateway.handle(request, None)  # type: ignore[arg-type]
    assert rejected.value.category == "wrong-model"
