"""Failures a user meets and the command line turns into one line: defined apart from the
code that raises them, so that catching one does not import NATS or an HTTP client."""

from __future__ import annotations


class NatsUnreachable(ConnectionError):
    """No NATS server answered at the configured URL."""


class NatsRefused(ConnectionError):
    """The NATS server answered but refused the credentials."""


class AggregatorRefused(RuntimeError):
    """The aggregator answered with an error (no such job, not complete yet): its words."""


class JobRejected(RuntimeError):
    """The producer refused the job; the message says why."""


class OwnedElsewhere(RuntimeError):
    """What this service would own (a gateway partition) is held by another process."""
