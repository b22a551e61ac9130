"""Thousands of mutants of real messages on every consumed subject, through decoding and
each service's handler as the worker runs them: each must be handled, or refused at once
(an invalid message or a rejection: a dead letter with its reason). Any other exception
would take the "might work later" path: 20 deliveries, minutes each, for nothing."""

from __future__ import annotations

import collections
import random
from pathlib import Path
from typing import Any

from proto import (
    GenerationReply,
    GenerationRequest,
    InvalidMessage,
    Message,
    ObservationMessage,
    decode,
    encode,
    replace,
)
from services.aggregator.service import Aggregator
from services.core.replay import Generation
from services.datasets import MIRROR_ENV
from services.gateway.service import Gateway
from services.producer.service import Producer
from services.runtime.handlers import Reject, handle_and_publish
from services.runtime.memory import MemoryBus
from services.scorer.service import Scorer
from services.wire import answer_of
from tests.aggregator.test_handlers import _manifest, _result
from tests.conftest import DATASET_MIRROR
from tests.fuzz.mutants import mutate
from tests.support.messages import ANYWHERE, JOB, work

MUTANTS = 1000  # per service


async def test_every_mutant_is_handled_or_refused_at_once(
    tmp_path: Path, standin_url: str, capsys, monkeypatch
) -> None:
    monkeypatch.setenv(MIRROR_ENV, str(DATASET_MIRROR))  # a mutant without its mirror: no Hub to wait for here
    rng = random.Random(20261129)
    seeds = real_messages()
    services = {
        "producer": Producer(data_roots=ANYWHERE),
        "scorer": Scorer(partitions=2),
        "gateway": Gateway(tmp_path / "gateway", backends=(standin_url,)),
        "aggregator": Aggregator(tmp_path / "aggregator"),
    }
    await _fuzz(services, seeds, rng, capsys)


def real_messages() -> dict[str, list[Message]]:
    """Real messages each service consumes: what the mutants are made of."""
    question = "What is the sentiment of the following paragraph? Paragraph: A warm, funny film."
    counterfactual = work(task="counterfactual")
    return {
        "producer": [JOB, replace(JOB, task="counterfactual", config=["c-persona-you"])],
        "scorer": [
            ObservationMessage(work()),
            ObservationMessage(counterfactual),
            GenerationReply(answer=answer_of(Generation("positive", 0.5)), work=work()),
            GenerationReply(answer=answer_of(Generation("The paragraph: A cold film.", 0.5)), work=counterfactual),
        ],
        "gateway": [GenerationRequest(question, work())],
        "aggregator": [_manifest("j1", 3), _result("j1", 0), _result("j1", 1, "negative")],
    }


async def _fuzz(services: dict[str, Any], seeds: dict[str, list[Message]], rng: random.Random, capsys: Any) -> None:
    counts: dict[str, collections.Counter[str]] = {name: collections.Counter() for name in services}
    failures: list[str] = []
    bus = MemoryBus()
    for service in services.values():
        await service.start(bus)
    try:
        for name, service in services.items():
            for _ in range(MUTANTS):
                payload = mutate(rng.choice(seeds[name]), rng)
                outcome, error = await _handle(service, payload, bus)
                counts[name][outcome] += 1
                if error is not None:
                    failures.append(f"{name}: {error} <- {payload[:300]!r}")
        # What the handled mutants made travels on, as in the pipeline: each message to the
        # service that consumes it, until nothing new is published (a mutant's idx of 2**63
        # or negative seed may pass one service and trouble the next).
        routes = {type_: name for name, service in services.items() for type_ in service.accepts}
        delivered = 0
        for _ in range(6):
            pending, delivered = bus.published[delivered:], len(bus.published)
            for item in pending:
                name = routes.get(type(item.message))
                if name is None:
                    continue
                outcome, error = await _handle(services[name], encode(item.message), bus)
                counts[name][outcome if error else f"{outcome} downstream"] += 1
                if error is not None:
                    failures.append(f"{name}, downstream: {error} <- {item.message!r:.300}")
        for name, service in services.items():
            # And each service still does its work afterwards.
            for seed in seeds[name]:
                await handle_and_publish(service.handle, decode(encode(seed), *service.accepts), bus)
    finally:
        for service in services.values():
            await service.close()
    with capsys.disabled():
        for name, counted in counts.items():
            print(f"\nfuzz {name}: {MUTANTS} mutants: " + ", ".join(f"{n} {k}" for k, n in sorted(counted.items())))
    assert not failures, "\n".join(failures[:20])
    assert all(counted["handled"] and counted["invalid"] for counted in counts.values())


async def _handle(service: Any, payload: bytes, bus: MemoryBus) -> tuple[str, str | None]:
    """Decode and handle one payload as the worker does: the outcome, and the error when it
    is what this test exists to keep away (any exception but a refusal, which would take
    the "might work later" path)."""
    try:
        await handle_and_publish(service.handle, decode(payload, *service.accepts), bus)
    except InvalidMessage:
        return "invalid", None
    except Reject:
        return "rejected", None
    except Exception as error:
        return "other exception", f"{type(error).__name__}: {error}"
    return "handled", None
