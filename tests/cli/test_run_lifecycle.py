"""`introspect run` as a batch scheduler or a closed terminal meets it: signals, a killed
parent, a second run on the same folder, and a run whose every request was rejected.
Processes are checked in the process table (/proc), not trusted to have gone."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.local import LocalPipeline, free_port, wait_for_port
from services.runtime.lock import FolderInUse, FolderLock
from tests.conftest import DATASET_MIRROR
from tests.support.pipeline import standin_process

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def _children(pid: int) -> set[int]:
    """Every live descendant of `pid`, from the process table."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # gone meanwhile
                continue
            fields = stat.rpartition(")")[2].split()
            if fields[0] != "Z":
                parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def _until(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {seconds} s: {what}")


@pytest.fixture
def slow_standin() -> Iterator[str]:
    """A stand-in that takes 5 s per answer: a run against it is still going when signalled."""
    with standin_process("--latency", "5") as url:
        yield url


def _start_run(tmp_path: Path, endpoint: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "services.cli", "run", "--dataset", "IMDB", "--task", "classify",
               "--mirror", str(DATASET_MIRROR), "--endpoint", endpoint,
               "--data-dir", str(tmp_path / "d"), "--out", str(tmp_path / "out")]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _started_pipeline(run: subprocess.Popen[str]) -> set[int]:
    """The run's processes (nats-server, the launcher, the four services) once it says they
    are ready."""
    assert run.stderr is not None
    said = []
    while not said or "services ready" not in said[-1]:
        said.append(run.stderr.readline())
        assert said[-1], f"the run ended before its services were ready: {''.join(said)}{run.communicate()}"
    children = _children(run.pid)
    assert len(children) >= 6, children  # nats-server, the launcher and the services at least
    return children


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_stops_the_run_and_every_process_it_started(tmp_path: Path, slow_standin: str, signum: int) -> None:
    run = _start_run(tmp_path, slow_standin)
    children = _started_pipeline(run)
    run.send_signal(signum)
    _, err = run.communicate(timeout=120)
    assert run.returncode == (130 if signum == signal.SIGINT else 128 + signum)
    assert "stopping services..." in err
    # Gone with it (a process may still be in the kernel's exit when the pipes close).
    _until(lambda: not [pid for pid in children if _alive(pid)], 30, f"{children} to exit with the run")


def test_a_killed_run_takes_its_processes_with_it(tmp_path: Path, slow_standin: str) -> None:
    run = _start_run(tmp_path, slow_standin)
    children = _started_pipeline(run)
    run.kill()  # no handler runs: the children's parent-death signal must do it
    run.wait()
    _until(lambda: not [pid for pid in children if _alive(pid)], 90, f"{children} to exit after their parent")


def test_a_killed_run_s_folder_stays_locked_until_its_services_have_stopped(tmp_path: Path, slow_standin: str) -> None:
    """The services drain after `run` is killed (the gateway waits for its 5 s answers): a
    new run on the folder meanwhile would start a second nats-server on one store."""
    run = _start_run(tmp_path, slow_standin)
    children = _started_pipeline(run)
    run.kill()
    run.wait()
    lock = FolderLock(tmp_path / "d" / "pipeline.lock", "the data folder")
    with pytest.raises(FolderInUse, match=rf"the processes that process {run.pid} started \(it has exited; they"):
        lock.acquire()
    _until(lambda: not [pid for pid in children if _alive(pid)], 90, f"{children} to exit after their parent")
    with lock:  # the last of them gone, the folder is free
        pass


def test_a_service_s_port_is_the_pipeline_s_from_before_the_service_starts(tmp_path: Path) -> None:
    """Bound by the pipeline and handed down: no other process can take it between choosing
    and binding, nor while the service restarts."""
    with LocalPipeline(tmp_path / "d") as pipeline:
        port = pipeline.ports["scorer-0"]
        pipeline.kill("scorer-0")
        with socket.socket() as other, pytest.raises(OSError) as taken:
            other.bind(("127.0.0.1", port))
        assert taken.value.errno == errno.EADDRINUSE
        pipeline.start_service("scorer-0")
        pipeline.wait_healthy("scorer-0")
        assert pipeline.ports["scorer-0"] == port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
            assert response.status == 200


def test_a_second_pipeline_on_one_folder_is_refused_at_once(tmp_path: Path) -> None:
    with LocalPipeline(tmp_path / "d") as first:
        started = time.monotonic()
        with pytest.raises(FolderInUse, match=rf"in use by process {os.getpid()}"):
            LocalPipeline(tmp_path / "d").start()
        assert time.monotonic() - started < 5  # before any process was started
        first.check_alive()  # and the first goes on
    with LocalPipeline(tmp_path / "d"):  # free again once the first stopped
        pass


def test_a_run_whose_requests_were_all_rejected_fails_with_the_reason(tmp_path: Path) -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "services.cli", "standin", "--port", str(port),
                               "--max-input-chars", "10"], stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for_port(port, "the stand-in", server, timeout=60)
        run = _start_run(tmp_path, f"http://127.0.0.1:{port}")
        _, err = run.communicate(timeout=300)
    finally:
        server.terminate()
        server.wait()
    assert run.returncode == 1
    assert "introspect: error: 20 of 20 observations are generation errors; the most common (20): 422" in err


def test_a_run_writing_to_a_log_says_what_happens_in_plain_lines(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "services.cli", "run", "--dataset", "IMDB", "--task", "counterfactual",
               "--mirror", str(DATASET_MIRROR), "--data-dir", str(tmp_path / "d"),
               "--out", str(tmp_path / "out")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines[1:4] == ["introspect: starting NATS", "introspect: starting the stand-in and 4 services",
                          lines[3]] and lines[3].startswith("introspect: 4 services ready in ")  # fmt: skip
    progress = [line for line in lines if line.startswith("progress: ")]
    # 20 observations of a three-question task: every question counted, the last line once.
    assert progress[-1].startswith("progress: 20/20 observations; ") and " generations (" in progress[-1]
    assert progress.count(progress[-1]) == 1
    assert lines[-1] == "introspect: stopping services..."
    assert "\r" not in done.stderr  # no progress bar redrawn into a log file


def test_a_nats_port_taken_between_choosing_and_binding_is_chosen_again(tmp_path: Path, monkeypatch) -> None:
    """nats-server binds its own port: a busy machine can give away one found free first."""
    import services.local as local

    real = local.free_port
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()  # accepts connections and never answers: not the server we started
        port = taken.getsockname()[1]
        handed_out = iter([port])
        monkeypatch.setattr(local, "free_port", lambda: next(handed_out, None) or real())
        with LocalPipeline(tmp_path / "d") as pipeline:
            assert port not in pipeline.ports.values()
            pipeline.check_alive()
