"""Run one service process: connect, serve `/metrics` and `/healthz`, consume until SIGTERM.

On SIGTERM or SIGINT the service stops fetching, lets in-flight work finish for a grace
period, hands back what did not finish (JetStream redelivers it), and closes cleanly.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import importlib
import logging
import signal
import threading
from dataclasses import replace
from typing import Any, Protocol

import uvloop
from aiohttp import web

from proto import Message
from proto.subjects import ConsumerSpec

from ..errors import OwnedElsewhere
from .bus import Bus
from .handlers import Handled, Publisher
from .handoff import announce_ready, listening_socket
from .health import Health
from .metrics import CONSUMER_PENDING, health_app
from .ownership import Claim, Ownership
from .settings import PortInUse, Settings
from .worker import Worker

log = logging.getLogger("introspect")


class Service(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def accepts(self) -> tuple[type[Message], ...]:
        """The message types its subjects carry; anything else is dead-lettered."""

    @property
    def health(self) -> Health:
        """Its problems: what `/healthz` reports and what pauses its worker."""

    def consumer(self) -> ConsumerSpec: ...

    def claim(self) -> Claim | None:
        """What it must own alone while it runs (a gateway's partition); None: nothing."""

    async def start(self, bus: Publisher) -> None:
        """Open stores and clients; called once connected."""

    def handle(self, message: Any) -> Handled:
        """One decoded message in, what to publish out (see `handlers`)."""

    def routes(self) -> list[web.RouteDef]:
        """Extra HTTP routes beside /metrics and /healthz."""

    def stopping(self) -> None:
        """The process is stopping: long work (a producer's publication) should end at its
        next safe point and hand its message back (`HandBack`) rather than run on."""

    async def close(self) -> None: ...


class ServiceBase:
    """Defaults for the parts of `Service` most services do not need."""

    name: str
    _health: Health | None = None

    @property
    def health(self) -> Health:
        if self._health is None:
            self._health = Health(self.name)
        return self._health

    def claim(self) -> Claim | None:
        return None

    async def start(self, bus: Publisher) -> None:
        pass

    def routes(self) -> list[web.RouteDef]:
        return []

    def stopping(self) -> None:
        pass

    async def close(self) -> None:
        pass


def run(service: Service, settings: Settings) -> None:
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {service.name} %(levelname)s %(message)s")
    # uvloop: the same asyncio API on libuv; a service spends most of its time in the event loop.
    uvloop.run(serve(service, settings))


async def serve(service: Service, settings: Settings, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    bus = await Bus.open(settings, service.name, service.health)
    started = asyncio.Event()  # /healthz says ready only once the service has started
    health = service.health

    def problems() -> list[str]:
        if not started.is_set():
            return ["starting"]
        connection = [] if bus.client.is_connected else ["nats: not connected"]
        return connection + health.reasons()

    app = health_app(problems)
    app.add_routes(service.routes())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    handed_down = listening_socket(settings.listen_fd)
    site: web.BaseSite
    if handed_down is not None:
        site = web.SockSite(runner, handed_down)
    else:
        site = web.TCPSite(runner, settings.metrics_host, settings.metrics_port)
    try:
        await site.start()
    except OSError as error:
        await runner.cleanup()
        await bus.close()
        if error.errno == errno.EADDRINUSE:
            raise PortInUse(
                f"port {settings.metrics_port} on {settings.metrics_host} is in use; give the {service.name} "
                "another with --metrics-port or INTROSPECT_METRICS_PORT"
            ) from None
        raise
    host, port = handed_down.getsockname()[:2] if handed_down else (settings.metrics_host, settings.metrics_port)
    log.info("ready: metrics on http://%s:%d/metrics, NATS %s", host, port, settings.public_nats_url)
    consumer = replace(service.consumer(), ack_wait=settings.ack_wait)
    worker = Worker(bus, consumer, service.accepts, service.handle, settings.concurrency, settings.batch, health=health)
    pending = asyncio.create_task(_watch_pending(bus, service, stop))
    telling = asyncio.create_task(_tell_when_stopping(service, stop))
    ownership: Ownership | None = None
    keeping: asyncio.Task[None] | None = None
    lost = asyncio.Event()
    try:
        if (claim := service.claim()) is not None:  # before anything is opened or consumed
            ownership = await Ownership.take(bus.js, claim, replicas=bus.replicas or 1)
            keeping = asyncio.create_task(_keep_or_stop(ownership, lost, stop))
        await service.start(bus)
        settle_garbage_collector()
        started.set()
        announce_ready(settings.ready_fd)
        await worker.run(stop)
    finally:
        pending.cancel()
        telling.cancel()
        if keeping is not None:
            keeping.cancel()
        await service.close()
        if ownership is not None and not lost.is_set():
            await ownership.release()
        await runner.cleanup()
        await bus.close()
        log.info("stopped")
    if lost.is_set():
        raise OwnedElsewhere(f"stopped: another owner took {ownership.claim.key if ownership else 'the claim'}")


async def _tell_when_stopping(service: Service, stop: asyncio.Event) -> None:
    await stop.wait()
    service.stopping()


async def _keep_or_stop(ownership: Ownership, lost: asyncio.Event, stop: asyncio.Event) -> None:
    """Renew the claim; if another owner has taken it, stop (two owners must never consume)."""
    await ownership.keep(lost)
    stop.set()


def import_in_background(*modules: str) -> None:
    """Import `modules` in a thread, now: a service whose first message needs a slow import
    (the aggregator's Parquet writer, half a second on a laptop) pays for it while it waits
    for work, not while a job waits for it."""

    def load() -> None:
        for module in modules:
            try:
                importlib.import_module(module)
            except Exception as error:  # the message that needs it will say so
                log.info("could not import %s ahead of time: %s", module, error)

    threading.Thread(target=load, name="import-in-background", daemon=True).start()


def settle_garbage_collector() -> None:
    """Once started: set what the process loaded aside from the cyclic garbage collector,
    and collect young objects less often.

    A service's heap is mostly the libraries it imported, and its messages die young by
    reference counting. With Python's defaults, a collection every 700 new containers
    re-examined the 256 messages in flight each time: 0.4 s of a 9 s benchmark run in the
    gateway, in pauses of up to 0.1 s that left every backend slot waiting.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 10, 10)


async def _watch_pending(bus: Bus, service: Service, stop: asyncio.Event) -> None:
    """Keep the queue-depth gauge current: how much work waits for this service."""
    spec = service.consumer()
    while not stop.is_set():
        try:
            info = await bus.js.consumer_info(spec.stream, spec.durable)
            CONSUMER_PENDING.labels(service.name).set(info.num_pending or 0)
        except Exception:  # the consumer may not exist yet; the gauge is best effort
            pass
        await asyncio.sleep(2.0)
