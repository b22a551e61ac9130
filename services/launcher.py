"""What the launcher imports before it forks the services (`local.start_launcher`).

Every service `introspect run` starts is forked from one process that has imported this
module, so no service imports anything itself. The objects made here are long-lived (the
libraries' modules, classes, functions): the cyclic garbage collector is kept off while
they are made, and they are then set aside from it (`gc.freeze`). Each forked service
otherwise collected the whole inherited heap once it started (`runtime.service.
settle_garbage_collector`): 60 to 90 ms of each service's start while four start at once
on two cores, and every page the collector touched copied.
"""

from __future__ import annotations

import contextlib
import gc

# The services' own modules: what a service started by `introspect serve` imports.
SERVICE_MODULES = (
    "services.cli.commands",
    "services.runtime.service",
    "services.producer.service",
    "services.scorer.service",
    "services.gateway.service",
    "services.aggregator.service",
    "services.standin.server",
)


def preload() -> None:
    import importlib

    gc.disable()
    try:
        for module in SERVICE_MODULES:
            # As the fork server treats each module it preloads: one that fails is left to
            # the service that needs it, which imports it again after the fork and says why.
            with contextlib.suppress(ImportError):
                importlib.import_module(module)
    finally:
        # Not collected first: the few cycles importing left (under 2% of the objects) stay,
        # where a collection would cost the launcher 40 ms before the first service can start.
        gc.freeze()
        gc.enable()


preload()
