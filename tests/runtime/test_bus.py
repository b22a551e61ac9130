"""The NATS helper against a real nats-server: credentials, idempotent streams, publish and dedup."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import nats.errors
import nats.js.errors
import pytest
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from proto import Chat, JobEvent, Sampling, WorkItem
from proto import subjects as sub
from services.errors import NatsRefused, NatsUnreachable
from services.runtime.bus import Bus, connect
from services.runtime.handlers import Outgoing
from services.runtime.settings import Settings
from services.steps import next_message
from tests.support.nats import NatsServer


@pytest.fixture
def nats_with_password(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "jetstream", user="introspect", password="s3cret")
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_credentials_are_used_and_wrong_ones_refused(nats_with_password: NatsServer) -> None:
    url = nats_with_password.url
    good = Settings(nats_url=url, nats_user="introspect", nats_password="s3cret")
    client = await connect(good, "test")
    assert client.is_connected
    await client.close()
    with pytest.raises(NatsRefused, match="refused the credentials: authorization failed"):
        await connect(Settings(nats_url=url, nats_user="introspect", nats_password="wrong"), "test")


async def test_a_server_that_is_not_there_is_named_without_its_secrets(closed_port: int) -> None:
    url = f"nats://introspect:s3cret@127.0.0.1:{closed_port}"
    with pytest.raises(NatsUnreachable) as raised:
        await connect(Settings(nats_url=url), "test")
    assert "s3cret" not in str(raised.value) and "introspect:***@127.0.0.1" in str(raised.value)


async def test_streams_are_declared_idempotently_and_repeats_are_dropped(nats_with_password: NatsServer) -> None:
    settings = Settings(nats_url=nats_with_password.url, nats_user="introspect", nats_password="s3cret")
    bus = await Bus.open(settings, "test")
    try:
        await bus.ensure_streams()  # a second service starting: nothing changes, nothing fails
        event = JobEvent("job", "accepted", "", 1.0)
        await bus.publish([Outgoing(sub.EVENTS, event, "job:accepted")])
        await bus.publish([Outgoing(sub.EVENTS, event, "job:accepted")])  # a re-publication after a crash
        info = await bus.js.stream_info("INTROSPECT_EVENTS")
        assert info.state.messages == 1
        names = {stream.config.name for stream in await bus.js.streams_info()}
        assert names == {spec.name for spec in sub.STREAMS}
    finally:
        await bus.close()


async def test_each_model_s_questions_reach_only_that_model_s_gateways(nats_with_password: NatsServer) -> None:
    settings = Settings(nats_url=nats_with_password.url, nats_user="introspect", nats_password="s3cret")
    bus = await Bus.open(settings, "test")
    try:
        gateways = {}
        for model in ("llama2-7b", "mistral-v2-7b"):
            spec = sub.consumer_for("gateway", 0, model)
            await bus.ensure_consumer(spec)
            gateways[model] = await bus.js.pull_subscribe_bind(spec.durable, spec.stream)
        for model, idx in (("llama2-7b", 0), ("mistral-v2-7b", 0), ("mistral-v2-7b", 1)):
            observation = {"idx": idx, "text": "A fine film.", "label": "positive"}
            work = WorkItem(f"job-{model}", "classify", "sentiment", [], observation, Chat(model, "none", Sampling()))
            await bus.publish([next_message(work, partitions=1)])
        received = {model: await _drain(gateway) for model, gateway in gateways.items()}
        assert {model: len(messages) for model, messages in received.items()} == {"llama2-7b": 1, "mistral-v2-7b": 2}
        assert all(m.subject == f"introspect.generate.{model}.0" for model, ms in received.items() for m in ms)
        # A gateway taking every model's requests cannot start beside model-specific ones:
        # JetStream refuses overlapping consumers on a work-queue stream, so no request is
        # ever answered by a server of another model.
        with pytest.raises(nats.js.errors.BadRequestError):
            await bus.ensure_consumer(sub.consumer_for("gateway", 0))
    finally:
        await bus.close()


async def _drain(subscription: JetStreamContext.PullSubscription) -> list[Msg]:
    """Every message the consumer has now (one fetch may return fewer than are there)."""
    messages: list[Msg] = []
    while True:
        try:
            messages += await subscription.fetch(10, timeout=0.5)
        except (TimeoutError, nats.errors.TimeoutError):  # nats-py raises either
            return messages


async def test_a_publication_jetstream_never_acknowledges_fails_after_its_timeout(nats_server: NatsServer) -> None:
    bus = await Bus.open(Settings(nats_url=nats_server.url), "test")
    try:
        event = JobEvent("job", "accepted", "", 1.0)
        nats_server.pause()  # the server takes the bytes but never answers
        try:
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await bus.publish([Outgoing(sub.EVENTS, event, "job:1")], timeout=0.5)
            # After its own timeout, well before the default 10 s (slack for a busy machine).
            assert 0.5 <= time.monotonic() - started < 5.0
        finally:
            nats_server.resume()  # whatever happened, closing needs the server
        await bus.publish([Outgoing(sub.EVENTS, event, "job:2")], timeout=5.0)  # and then works again
        assert not bus._unacked  # nothing left waiting
    finally:
        await bus.close()


async def test_no_dead_letter_can_break_the_listing_of_the_others(nats_server: NatsServer) -> None:
    """A reason quoting a huge bad message is cut to a bounded size; a stored letter that
    does not decode (another version's, or damaged) is listed as unreadable, never replayed,
    and the readable ones are listed and replayed as usual."""
    from services.client import UNREADABLE, _dead_letters, replay_dead_letters

    settings = Settings(nats_url=nats_server.url)
    bus = await Bus.open(settings, "scorer")
    try:
        spec = sub.consumer_for("gateway", 0)
        await bus.ensure_consumer(spec)
        gateway = await bus.js.pull_subscribe_bind(spec.durable, spec.stream)
        subject = spec.filter_subject.replace("*", "llama2-7b").replace(">", "llama2-7b.0")
        await bus.js.publish(subject, b"\xc1 not msgpack", headers={"Nats-Msg-Id": "x" * 60_000})
        (msg,) = await _drain(gateway)
        await bus.dead_letter(msg, "invalid message: " + "y" * 2_000_000, "invalid")
        await bus.js.publish(sub.dead_letter_subject("scorer"), b"\x00 damaged on disk")

        listed = await _dead_letters(bus, "scorer")
        assert [letter.service for _, letter in listed] == ["scorer", UNREADABLE]
        good, bad = listed[0][1], listed[1][1]
        assert len(good.reason) < 4200 and good.reason.endswith("more characters cut)")
        assert good.msg_id is not None and len(good.msg_id) == 4096
        assert bad.reason.startswith("unreadable dead letter of 17 bytes: ") and bad.subject == ""

        replayed = await replay_dead_letters(settings)
        assert [letter.service for _, letter in replayed] == ["scorer"]
        assert [letter.service for _, letter in await _dead_letters(bus, None)] == [UNREADABLE]  # kept, to be seen
        assert [m.data for m in await _drain(gateway)] == [b"\xc1 not msgpack"]  # back where it came from
    finally:
        await bus.close()


async def test_a_jetstream_without_room_is_reported_and_the_publication_waits_until_there_is(
    tmp_path, monkeypatch
) -> None:
    """JetStream's storage full (its limit here; a full disk answers the same): the
    publication is not failed (which would hand its message back, spending a delivery each
    time) but reported as the `nats` problem, which pauses the service, and published again
    until there is room; then the problem clears."""
    import asyncio

    from services.runtime import bus as bus_module
    from services.runtime.health import Health

    class CountingHealth(Health):
        reports = 0

        def report(self, problem: str, reason: str, *, blocks_work: bool = True) -> None:
            CountingHealth.reports += 1
            super().report(problem, reason, blocks_work=blocks_work)

    monkeypatch.setattr(bus_module, "STORAGE_RETRY_FIRST", 0.05)
    monkeypatch.setattr(bus_module, "STORAGE_RETRY_MAX", 0.05)
    config = tmp_path / "nats.conf"
    store = tmp_path / "jetstream"
    config.write_text(f'jetstream {{ store_dir: "{store}", max_file_store: 256KB }}\n')
    server = NatsServer(store, config=config)
    server.start()
    health = CountingHealth("test")
    bus = await Bus.open(Settings(nats_url=server.url), "test", health)
    try:
        filler = await bus.js.add_stream(name="FILLER", subjects=["filler"])
        assert filler.config.name == "FILLER"
        while True:  # fill JetStream to its limit with another stream's messages
            answer = await bus.client.request("filler", b"x" * 4000, timeout=10)
            if b"insufficient resources" in answer.data:
                break
        event = JobEvent("job", "accepted", "", 1.0)
        publishing = asyncio.ensure_future(bus.publish([Outgoing(sub.EVENTS, event, "job:accepted")]))
        async with asyncio.timeout(30):
            while CountingHealth.reports < 3:  # three attempts, each refused
                await asyncio.sleep(0.01)
        assert not publishing.done()  # still waiting, not failed
        assert not health.can_work and "insufficient resources" in health.reasons()[0]
        await bus.js.delete_stream("FILLER")  # room again
        await asyncio.wait_for(publishing, 30)
        assert health.can_work and health.reasons() == []
        stored = await bus.js.get_last_msg("INTROSPECT_EVENTS", sub.EVENTS)
        assert stored.header is not None and stored.header["Nats-Msg-Id"] == "job:accepted"
    finally:
        await bus.close()
        server.stop()
