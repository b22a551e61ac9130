"""One way for tests to run nats-server: on free loopback ports, its store in a folder of
the test's, started when it listens and stoppable every way a test needs (terminate, kill,
pause). The product's own local pipeline starts it its own way (`services.local`)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from services.local import free_port, nats_server_binary, wait_for_port


class NatsServer:
    """nats-server with JetStream; a restart keeps its port and store."""

    def __init__(
        self,
        store: Path,
        user: str | None = None,
        password: str | None = None,
        config: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.store = store
        self.port = free_port()
        self.monitor_port = free_port()
        self.user, self.password = user, password
        self.config = config
        self.env = dict(env) if env is not None else None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}"

    def command(self) -> Sequence[str]:
        where = ["-a", "127.0.0.1", "-p", str(self.port), "-m", str(self.monitor_port)]
        if self.config is not None:  # the config sets JetStream and its store
            return [nats_server_binary(), "-c", str(self.config), *where]
        auth = ["--user", self.user, "--pass", self.password or ""] if self.user else []
        return [nats_server_binary(), "-js", "-sd", str(self.store), *where, *auth]

    def start(self) -> None:
        self.process = subprocess.Popen(self.command(), env=self.env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)  # fmt: skip
        wait_for_port(self.port, "nats-server", self.process, timeout=60)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a paused server cannot stop
            self.process.terminate()
            self.process.wait()

    def kill(self) -> None:
        """A crash: no goodbye (a 409 Server Shutdown) to the pull requests."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def pause(self) -> None:
        """SIGSTOP: the server takes bytes but never answers; returns once it is stopped."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        _wait_until_stopped(self.process.pid)  # kill() returns before a busy process has stopped

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


def _wait_until_stopped(pid: int, seconds: float = 10.0) -> None:
    """Until the kernel reports the process stopped (state T in /proc/PID/stat)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            if stat.read().rpartition(")")[2].split()[0] == "T":
                return
        time.sleep(0.005)
    raise AssertionError(f"process {pid} did not stop within {seconds} s")
