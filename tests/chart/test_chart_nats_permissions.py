"""The chart's NATS users, held to their permissions by the real nats-server running the
rendered nats.conf: each role may do what it needs (test_chart_wiring.py runs the whole
pipeline so) and nothing that belongs to another role."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import nats
import nats.errors
import pytest
import pytest_asyncio

from proto import subjects as sub
from services.runtime.bus import Bus
from services.runtime.settings import Settings
from tests.support.chart import render, run_chart_nats, secret_data
from tests.support.nats import NatsServer
from tests.support.pipeline import get_bytes

pytestmark = pytest.mark.chart

GATEWAY_0 = sub.consumer_for("gateway", 0, "llama2-7b")  # the default values: llama2-7b, 2 partitions
NEXT = f"$JS.API.CONSUMER.MSG.NEXT.{GATEWAY_0.stream}.{GATEWAY_0.durable}"
SENTINEL = "introspect.no-role-may-publish-this"


@pytest.fixture(scope="module")
def chart_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NatsServer, dict[str, str]]]:
    objects = render()
    secret = secret_data(objects, "introspect-nats-auth")
    with run_chart_nats(objects, tmp_path_factory.mktemp("nats"), secret) as (server,):
        yield server, secret


class Client:
    """A connection as one role, which records the permission violations the server reports."""

    def __init__(self, server: NatsServer, secret: dict[str, str], role: str) -> None:
        self.server, self.secret, self.role = server, secret, role
        self.violations: list[str] = []
        self.nc: nats.NATS | None = None

    async def __aenter__(self) -> nats.NATS:
        async def on_error(error: Exception) -> None:
            if "permissions violation" in str(error).lower():
                self.violations.append(str(error))

        self.nc = await nats.connect(self.server.url, user=self.role, password=self.secret[f"{self.role}-password"],
                                     error_cb=on_error, allow_reconnect=False,
                                     inbox_prefix=f"_INBOX_{self.role}")  # fmt: skip
        return self.nc

    def refused(self, subject: str) -> bool:
        return any(f'"{subject.lower()}"' in violation.lower() for violation in self.violations)

    async def __aexit__(self, *_: object) -> None:
        assert self.nc is not None
        await self.nc.close()


@pytest_asyncio.fixture
async def streams(chart_nats: tuple[NatsServer, dict[str, str]]) -> AsyncIterator[None]:
    """The streams, and the first gateway's consumer, as the gateway declares them."""
    server, secret = chart_nats
    bus = await Bus.open(Settings(nats_url=server.url, nats_user="gateway", nats_password=secret["gateway-password"],
                                  nats_inbox_prefix="_INBOX_gateway"), "gateway")  # fmt: skip
    await bus.ensure_consumer(GATEWAY_0)
    await bus.close()
    yield


# (role, "publish" or "subscribe", subject, allowed): what each role must not do, with a few
# things it must do beside them, to show the refusals are the permissions' and not the test's.
CASES = [
    ("scorer", "publish", "introspect.jobs", False),  # the scorer cannot submit a job
    ("scorer", "publish", "introspect.generate.llama2-7b.1", True),
    ("scorer", "publish", f"$JS.API.CONSUMER.DELETE.{GATEWAY_0.stream}.{GATEWAY_0.durable}", False),
    ("scorer", "subscribe", "introspect.>", False),
    ("submitter", "publish", "introspect.jobs", True),
    ("submitter", "publish", NEXT, False),  # cannot take the gateway's work
    ("submitter", "publish", f"$JS.ACK.{GATEWAY_0.stream}.{GATEWAY_0.durable}.1.1.1.1.0", False),  # nor ack it away
    ("submitter", "subscribe", "introspect.generate.>", False),  # nor listen to generation requests
    ("submitter", "publish", "introspect.score.reply", False),  # nor forge a model's answer
    ("gateway", "publish", "introspect.score.reply", False),  # replies were an earlier version's
    ("submitter", "publish", "introspect.results.record", False),  # nor a scored result
    ("submitter", "publish", "$JS.API.STREAM.DELETE.INTROSPECT_JOBS", False),
    ("submitter", "publish", "$JS.API.STREAM.PURGE.INTROSPECT_RESULTS", False),
    ("submitter", "publish", "$JS.API.STREAM.UPDATE.INTROSPECT_JOBS", False),
    ("submitter", "publish", "$JS.API.STREAM.MSG.DELETE.INTROSPECT_DEAD", False),  # only an operator
    ("submitter", "subscribe", "introspect.dead.*", True),
    ("operator", "publish", "$JS.API.STREAM.MSG.DELETE.INTROSPECT_DEAD", True),
    ("operator", "publish", "$JS.API.STREAM.DELETE.INTROSPECT_DEAD", False),
    ("operator", "publish", NEXT, False),
    # a gateway takes an observation's next step (services/steps.py): its next question or its result
    ("gateway", "publish", "introspect.results.record", True),
    ("gateway", "publish", "introspect.generate.llama2-7b.1", True),
    ("gateway", "publish", "introspect.score.observation", False),  # it never makes up an observation
    ("gateway", "publish", "introspect.jobs", False),
    ("gateway", "publish", "$JS.API.CONSUMER.MSG.NEXT.INTROSPECT_SCORE.scorer", False),
    ("gateway", "publish", NEXT, True),
    ("producer", "publish", "introspect.generate.llama2-7b.0", False),
    ("producer", "publish", "introspect.jobs", False),
    ("aggregator", "publish", "introspect.score.observation", False),
    ("aggregator", "publish", "$JS.API.CONSUMER.MSG.NEXT.INTROSPECT_JOBS.producer", False),
    ("producer", "subscribe", "$SYS.>", False),
    ("submitter", "subscribe", "_INBOX_gateway.>", False),  # nor read what the gateway is sent
    ("submitter", "subscribe", "_INBOX.>", False),
    ("scorer", "subscribe", "_INBOX_scorer.>", True),
    ("scorer", "subscribe", "_INBOX_aggregator.>", False),
]


@pytest.mark.parametrize(("role", "action", "subject", "allowed"), CASES)
async def test_each_role_may_use_only_its_own_subjects(
    chart_nats: tuple[NatsServer, dict[str, str]], role: str, action: str, subject: str, allowed: bool
) -> None:
    server, secret = chart_nats
    client = Client(server, secret, role)
    async with client as nc:
        if action == "publish":
            await nc.publish(subject, b"{}")
        else:
            await nc.subscribe(subject)
        # A refusal is reported asynchronously, some (acks) by another path of the server
        # than the rest: wait for it, or for the refusal of a publication sent after it.
        await nc.publish(SENTINEL, b"")
        await nc.flush()
        for _ in range(100):
            if client.refused(subject if not allowed else SENTINEL):
                break
            await asyncio.sleep(0.05)
        if allowed:
            await asyncio.sleep(0.2)
    assert client.refused(subject) is not allowed, client.violations


def _stored(server: NatsServer, stream: str) -> int:
    monitor = json.loads(get_bytes(f"{server.monitor_url}/jsz?streams=true"))
    details: list[dict[str, Any]] = [s for a in monitor["account_details"] for s in a["stream_detail"]]
    (found,) = [s for s in details if s["name"] == stream]
    return int(found["state"]["messages"])


async def test_a_submitter_cannot_take_the_gateway_s_work_and_the_scorer_cannot_submit_jobs(
    chart_nats: tuple[NatsServer, dict[str, str]], streams: None
) -> None:
    server, secret = chart_nats
    jobs_before = _stored(server, "INTROSPECT_JOBS")
    scorer = Client(server, secret, "scorer")
    async with scorer as nc:
        request = sub.generation_subject("llama2-7b", 0)
        await nc.jetstream().publish(request, b"a request", headers={"Nats-Msg-Id": "r1"})
        with pytest.raises(nats.errors.TimeoutError):  # refused: no store, no answer
            await nc.jetstream().publish(sub.JOBS, b"a job", timeout=1)
    assert _stored(server, "INTROSPECT_JOBS") == jobs_before
    assert any("introspect.jobs" in v for v in scorer.violations)

    submitter = Client(server, secret, "submitter")
    async with submitter as nc:
        with pytest.raises(nats.errors.TimeoutError):
            await nc.request(NEXT, json.dumps({"batch": 1, "expires": 500_000_000}).encode(), timeout=1)
    assert submitter.violations

    # The request is still the gateway's, whole: its own pull takes it.
    gateway = Client(server, secret, "gateway")
    async with gateway as nc:
        pull = await nc.jetstream().pull_subscribe_bind(GATEWAY_0.durable, GATEWAY_0.stream)
        (message,) = await pull.fetch(1, timeout=5)
        assert message.data == b"a request" and message.metadata.num_delivered == 1
        await message.ack()
    assert not gateway.violations
