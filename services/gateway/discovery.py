"""Finding model server pods (TGI, vLLM, SGLang) in a cluster: the EndpointSlices of their Service, listed then watched.

The Kubernetes API tells which pods back a Service, and which of them are ready, through
EndpointSlices (label `kubernetes.io/service-name`). The watcher lists them, then follows
the watch stream, and after every change hands the full set of ready URLs to a callback;
the gateway's pool adds and drops backends from it. The `kubernetes` client is
synchronous, so the watcher runs in a thread of its own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kubernetes import client, watch

log = logging.getLogger("introspect")

SERVICE_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True, slots=True)
class ServiceRef:
    """A model server Service: `namespace/name`, and the name of its HTTP port (any port if None)."""

    namespace: str
    name: str
    port_name: str | None = None

    @classmethod
    def parse(cls, text: str) -> ServiceRef:
        """`namespace/name` or `namespace/name:port-name`."""
        where, _, port = text.partition(":")
        namespace, sep, name = where.partition("/")
        if not sep or not namespace or not name:
            raise ValueError(f"a model server Service is namespace/name[:port-name], got {text!r}")
        return cls(namespace, name, port or None)


def ready_urls(slices: Iterable[Any], port_name: str | None) -> set[str]:
    """`http://address:port` for every ready endpoint of the slices (V1EndpointSlice objects)."""
    urls = set()
    for endpoint_slice in slices:
        ports = [p.port for p in endpoint_slice.ports or [] if port_name is None or p.name == port_name]
        if not ports:
            continue
        for endpoint in endpoint_slice.endpoints or []:
            conditions = endpoint.conditions
            if conditions is not None and conditions.ready is False:  # unknown counts as ready
                continue
            for address in endpoint.addresses or []:
                host = f"[{address}]" if ":" in address else address
                urls.add(f"http://{host}:{ports[0]}")
    return urls


class EndpointSliceWatcher:
    def __init__(
        self,
        api: client.DiscoveryV1Api,
        service: ServiceRef,
        on_change: Callable[[set[str]], None],
        retry_delay: float = 2.0,
    ) -> None:
        self.api = api
        self.service = service
        self.on_change = on_change
        self.retry_delay = retry_delay
        self.stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="endpointslice-watch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.stop.set()

    def run(self) -> None:
        selector = f"{SERVICE_LABEL}={self.service.name}"
        while not self.stop.is_set():
            try:
                listing = self.api.list_namespaced_endpoint_slice(self.service.namespace, label_selector=selector)
                slices = {_name(s): s for s in listing.items}
                self._report(slices)
                stream = watch.Watch().stream(
                    self.api.list_namespaced_endpoint_slice,
                    self.service.namespace,
                    label_selector=selector,
                    resource_version=listing.metadata.resource_version if listing.metadata else None,
                    timeout_seconds=300,
                )
                for event in stream:
                    if self.stop.is_set():
                        return
                    endpoint_slice = event["object"]
                    if event["type"] == "DELETED":
                        slices.pop(_name(endpoint_slice), None)
                    elif event["type"] in ("ADDED", "MODIFIED"):
                        slices[_name(endpoint_slice)] = endpoint_slice
                    self._report(slices)
            except Exception as error:  # the API server restarting, a watch expiring: list again
                log.warning("endpointslice watch of %s: %s; listing again", self.service.name, error)
                self.stop.wait(self.retry_delay)

    def _report(self, slices: dict[str, Any]) -> None:
        self.on_change(ready_urls(slices.values(), self.service.port_name))


def discovery_api(host: str | None = None) -> client.DiscoveryV1Api:
    """In a pod: the in-cluster API with its service account; `host` for a given API server."""
    if host is None:
        from kubernetes import config

        config.load_incluster_config()
        return client.DiscoveryV1Api()
    configuration = client.Configuration()
    configuration.host = host
    return client.DiscoveryV1Api(client.ApiClient(configuration))


def _name(endpoint_slice: Any) -> str:
    """An EndpointSlice's name (the API always sets one; the client's types allow none)."""
    metadata = endpoint_slice.metadata
    return str(metadata.name) if metadata is not None else ""
