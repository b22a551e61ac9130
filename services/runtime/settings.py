"""The one config loader: every service reads its settings from the environment.

Command-line flags of `introspect serve` are applied on top (they win), so the same image
runs in a cluster (settings from the chart, as environment variables) and on a laptop.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..backends.contract import ENGINES, Engine

ENV_PREFIX = "INTROSPECT_"
# Settings under an earlier name, still read: old name -> setting.
RENAMED = {"tgi_service": "model_service"}


class InvalidSettings(ValueError):
    """A setting has a value the service cannot use."""


class PortInUse(InvalidSettings):
    """The port a service was told to listen on is taken."""


@dataclass(frozen=True, slots=True)
class Settings:
    nats_url: str = "nats://127.0.0.1:4222"
    nats_creds: str | None = None  # a .creds file (JWT and NKey seed)
    nats_user: str | None = None
    nats_password: str | None = None
    nats_token: str | None = None
    nats_tls_ca: str | None = None  # setting any TLS file turns TLS on
    nats_tls_cert: str | None = None
    nats_tls_key: str | None = None
    # Where replies come back: a role's own prefix lets NATS permissions keep each role to
    # its own replies (the chart gives each `_INBOX_<role>`); NATS's default is `_INBOX`.
    nats_inbox_prefix: str = "_INBOX"
    # Copies JetStream keeps of each stream (3 on a 3-server NATS cluster); None: a new stream
    # gets 1 and an existing one keeps what it has (a client never undoes the cluster's choice).
    stream_replicas: int | None = None
    data_dir: str = ".introspect"  # RocksDB folders (gateway cache, aggregator store)
    results_dir: str | None = None  # aggregator: result files (default: <data_dir>/results)
    # Loopback unless told otherwise: the API serves records, which hold rows of the data a
    # job read. The chart sets 0.0.0.0, inside the pod's network policy.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9090  # /metrics and /healthz (the aggregator also serves its API here)
    partitions: int = 1  # gateway partitions: each has its own subject and cache
    partition: int = 0  # which partition this gateway serves (a StatefulSet ordinal)
    model: str | None = None  # gateway: the model it serves, as jobs name it; None: every model
    served_models: tuple[str, ...] = field(default=())  # producer: refuse jobs for other models; empty: any
    # producer: the folders a job's own files (a data file, a dataset mirror, a model's
    # tokenizer_config.json) may be read from; empty: none, only datasets by name.
    data_roots: tuple[str, ...] = field(default=())
    # aggregator: the bearer token its API (/jobs...) asks for; clients send it. None: open
    # (loopback by default; the chart sets one from a Secret).
    api_token: str | None = None
    # gateway: backend specs, URLs with the engine as prefix where it is not TGI (vllm+, sglang+, openai+)
    backends: tuple[str, ...] = field(default=())
    backend_concurrency: int = 0  # gateway: per-backend limit; 0 asks TGI's /info (others say none: 16)
    generation_timeout: float = 300.0  # gateway: seconds for one call to a model server (two such, then handed back)
    # gateway: namespace/name[:port] of a Service whose model server pods it finds through the
    # Kubernetes API (formerly INTROSPECT_TGI_SERVICE, still read), and the engine they run
    model_service: str | None = None
    model_engine: Engine = "tgi"  # tgi, vllm, sglang, or openai (any other OpenAI-compatible server)
    kubernetes_api: str | None = None  # gateway: API server URL (default: in-cluster)
    offline: bool = False  # gateway: answer from the cache alone
    cache_on_damage: str = "refuse"  # gateway: a cache RocksDB cannot open: refuse, or set-aside and start empty
    ack_wait: float = 15.0  # seconds before an unacknowledged message is redelivered
    concurrency: int = 256  # messages processed at once by one service process
    batch: int = 256  # most messages one pull request asks for
    # Set by a parent that starts the process (the local pipeline; see `handoff`): a socket
    # already listening on the metrics port, and a pipe to say "ready" on.
    listen_fd: int | None = None
    ready_fd: int | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for old, new in RENAMED.items():
            if env.get(ENV_PREFIX + old.upper()):
                values[new] = env[ENV_PREFIX + old.upper()]
        for spec in fields(cls):
            raw = env.get(ENV_PREFIX + spec.name.upper())
            if raw is not None and raw != "":
                values[spec.name] = _parse(spec.name, raw, str(spec.type))  # annotations are strings (future import)
        values |= {key: value for key, value in overrides.items() if value is not None}
        settings = replace(cls(), **values)
        settings.check()
        return settings

    def check(self) -> None:
        if self.partitions < 1:
            raise InvalidSettings(f"partitions must be at least 1, got {self.partitions}")
        if not 0 <= self.partition < self.partitions:
            raise InvalidSettings(f"partition {self.partition} is outside 0..{self.partitions - 1}")
        if self.model_service is not None and not re.fullmatch(r"[^/:\s]+/[^/:\s]+(:[^/:\s]+)?", self.model_service):
            raise InvalidSettings(f"model_service is namespace/name[:port-name], got {self.model_service!r}")
        if self.model_engine not in ENGINES:
            raise InvalidSettings(f"model_engine is one of {', '.join(ENGINES)}, got {self.model_engine!r}")
        if self.cache_on_damage not in ("refuse", "set-aside"):
            raise InvalidSettings(f"cache_on_damage is refuse or set-aside, got {self.cache_on_damage!r}")
        if self.generation_timeout <= 0:
            raise InvalidSettings(f"generation_timeout must be positive, got {self.generation_timeout}")
        if self.ack_wait <= 0:
            raise InvalidSettings(f"ack_wait must be positive, got {self.ack_wait}")
        if self.stream_replicas not in (None, 1, 3, 5):
            raise InvalidSettings(f"stream_replicas is 1, 3 or 5, got {self.stream_replicas}")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.nats_inbox_prefix):
            raise InvalidSettings(f"nats_inbox_prefix must be one subject token, got {self.nats_inbox_prefix!r}")
        if self.concurrency < 1 or self.batch < 1:
            raise InvalidSettings("concurrency and batch must be at least 1")

    @property
    def public_nats_url(self) -> str:
        """`nats_url` fit for a log line or a message: a password or token in it is masked."""
        return redact_url(self.nats_url)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)


def _parse(name: str, raw: str, annotation: str) -> Any:
    if annotation.startswith("int"):
        try:
            return int(raw)
        except ValueError:
            raise InvalidSettings(f"{ENV_PREFIX}{name.upper()} must be a whole number, got {raw!r}") from None
    if annotation.startswith("float"):
        try:
            return float(raw)
        except ValueError:
            raise InvalidSettings(f"{ENV_PREFIX}{name.upper()} must be a number, got {raw!r}") from None
    if annotation.startswith("bool"):
        if raw.lower() not in ("1", "true", "yes", "0", "false", "no"):
            raise InvalidSettings(f"{ENV_PREFIX}{name.upper()} must be true or false, got {raw!r}")
        return raw.lower() in ("1", "true", "yes")
    if annotation.startswith("tuple"):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw


def redact_url(url: str) -> str:
    """`url` with the secret of its user part (`user:password@`, or a lone token) masked."""
    scheme, separator, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if not separator or "@" not in authority:
        return url
    user, _, host = authority.rpartition("@")  # a password may hold an @; a host may not
    name, colon, _ = user.partition(":")
    return f"{scheme}://{name}:***@{host}{slash}{path}" if colon else f"{scheme}://***@{host}{slash}{path}"
