"""A real Prometheus (Debian's `prometheus` package) scraping local targets, for tests: a free
loopback port, a store of its own, a short scrape interval, and its HTTP query API."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from services.local import free_port

PORT_ATTEMPTS = 3


class Prometheus:
    """`prometheus` scraping `targets` (host:port of /metrics pages) every `interval`."""

    def __init__(self, folder: Path, targets: list[str], interval: str = "1s") -> None:
        self.folder = folder
        self.targets = targets
        self.interval = interval
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> None:
        binary = shutil.which("prometheus")
        assert binary is not None, "prometheus is missing: apt-get install prometheus"
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "prometheus.yml"
        scrape = {"job_name": "introspect", "static_configs": [{"targets": self.targets}]}
        interval = {"scrape_interval": self.interval, "evaluation_interval": self.interval}
        config.write_text(yaml.safe_dump({"global": interval, "scrape_configs": [scrape]}), encoding="utf-8")
        for _ in range(PORT_ATTEMPTS):  # it binds its own port: one found free may be taken first
            self.port = free_port()
            log = (self.folder / "prometheus.log").open("ab")
            self.process = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={self.folder / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=log, stderr=log,
            )  # fmt: skip
            log.close()
            if self._wait_ready(timeout):
                return
        raise AssertionError(f"prometheus did not start; see {self.folder / 'prometheus.log'}")

    def _wait_ready(self, timeout: float) -> bool:
        """Whether it answers /-/ready; False if it exited first (its port taken, say)."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=5) as response:
                    if response.status == 200:
                        return True
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready after {timeout:.0f} s; see {self.folder / 'prometheus.log'}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Prometheus:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar, as one sample) `expr` gives now, through /api/v1/query."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as error:  # 400 for an expression it refuses, with the reason
            raise AssertionError(f"prometheus refused {expr!r}: {error.read().decode()}") from None
        assert answer["status"] == "success", answer
        data = answer["data"]
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def wait_until(self, expr: str, timeout: float = 120.0) -> list[dict[str, Any]]:
        """The result of `expr` once it is not empty."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(expr)
            if result:
                return result
            time.sleep(0.5)
        raise AssertionError(f"{expr!r} gave no data in {timeout:.0f} s")
