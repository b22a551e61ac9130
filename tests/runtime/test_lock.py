"""The folder lock: one owner at a time, named to whoever else tries; a dead owner's lock is free."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from services.runtime.lock import FolderInUse, FolderLock

HOLD = """
import sys, time
from pathlib import Path
from services.runtime.lock import FolderLock
FolderLock(Path(sys.argv[1]), "x").acquire()
print("held", flush=True)
time.sleep(600)
"""


def _holder(path: Path) -> subprocess.Popen[str]:
    """Another process holding the lock; returns once it holds it."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "held"
    return process


def test_a_second_owner_is_refused_with_the_first_one_named(tmp_path: Path) -> None:
    path = tmp_path / "data" / "pipeline.lock"
    holder = _holder(path)
    try:
        with pytest.raises(FolderInUse, match=rf"the data folder is in use by process {holder.pid} \(lock "):
            FolderLock(path, "the data folder").acquire()
    finally:
        holder.kill()
        holder.wait()


def test_a_dead_owner_s_lock_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.lock"
    holder = _holder(path)
    holder.kill()  # no chance to clean up: the file stays, the kernel's lock goes
    holder.wait()
    assert path.exists()
    with FolderLock(path, "the data folder"):
        assert path.read_text().strip() != str(holder.pid)


def test_released_the_lock_can_be_taken_again(tmp_path: Path) -> None:
    lock = FolderLock(tmp_path / "a.lock", "a")
    lock.acquire()
    with pytest.raises(FolderInUse):
        FolderLock(tmp_path / "a.lock", "a").acquire()  # the same process, another open file
    lock.release()
    with FolderLock(tmp_path / "a.lock", "a"):
        pass
