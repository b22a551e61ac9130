"""Metrics every service shares, and the HTTP endpoint that serves `/metrics` and `/healthz`.

One registry per process: prometheus-client's default. Each service declares its own
metrics in its `metrics.py`; these are the ones the shared runtime updates. Label values
are bounded: stages, subject kinds, outcomes and reasons come from fixed sets. The label
naming the service is `stage`, not `service`: the Prometheus Operator gives every scraped
series a `service` label (the Kubernetes Service) and would rename ours.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

MESSAGES_CONSUMED = Counter(
    "introspect_messages_consumed_total", "Messages taken from JetStream, by kind", ["stage", "kind"]
)
MESSAGES_PUBLISHED = Counter(
    "introspect_messages_published_total", "Messages published to JetStream, by kind", ["stage", "kind"]
)
PROCESSING_SECONDS = Histogram(
    "introspect_processing_seconds",
    "Seconds from taking a message to acknowledging it",
    ["stage", "kind"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
)
DEAD_LETTERS = Counter(
    "introspect_dead_letters_total", "Messages sent to the dead-letter stream, by reason", ["stage", "reason"]
)
REDELIVERIES = Counter(
    "introspect_messages_released_total", "Messages handed back for redelivery after a failure", ["stage"]
)
# The steps of observations (services/steps.py): taken by the scorer (an observation's first
# question) and by the gateway that answered the one before (every later question, and the end).
QUESTIONS = Counter("introspect_questions_total", "Generation requests asked, by task kind", ["task"])
SCORED = Counter("introspect_observations_scored_total", "Observations finished and scored, by task kind", ["task"])
IN_FLIGHT = Gauge("introspect_messages_in_flight", "Messages being processed now", ["stage"])
CONSUMER_PENDING = Gauge(
    "introspect_consumer_pending", "Messages waiting in the service's JetStream consumer", ["stage"]
)


@lru_cache(maxsize=4096)
def child(metric: Any, *labels: str) -> Any:
    """`metric.labels(*labels)`, looked up once: label sets are few, messages are many."""
    return metric.labels(*labels)


def health_app(problems: Callable[[], list[str]]) -> web.Application:
    """`/metrics` in Prometheus text format; `/healthz` 200 while `problems()` is empty,
    else 503 with one line per problem (what a person reading the probe's failure needs)."""

    async def metrics(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest())
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return response

    async def healthz(_: web.Request) -> web.Response:
        standing = problems()
        if not standing:
            return web.Response(text="ok\n")
        return web.Response(status=503, text="not ready\n" + "".join(f"{line}\n" for line in standing))

    app = web.Application()
    app.add_routes([web.get("/metrics", metrics), web.get("/healthz", healthz)])
    return app
