"""What `introspect run`'s launcher leaves behind for the services it forks."""

from __future__ import annotations

import json
import subprocess
import sys


def test_the_launcher_preloads_every_service_with_its_heap_frozen_and_the_collector_back_on() -> None:
    # A fresh interpreter, as the launcher is: importing the module is what it does.
    probe = (
        "import gc, json, sys, services.launcher as launcher; "
        "print(json.dumps({'enabled': gc.isenabled(), 'frozen': gc.get_freeze_count(), "
        "'modules': launcher.SERVICE_MODULES, 'loaded': [m for m in launcher.SERVICE_MODULES if m in sys.modules]}))"
    )
    shown = json.loads(subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True).stdout)
    assert shown["enabled"] is True  # a forked service collects its own garbage
    assert shown["frozen"] > 10_000  # the libraries' objects, set aside from the collector
    assert shown["loaded"] == shown["modules"] and "services.gateway.service" in shown["modules"]
