"""One process at a time on a folder: a lock file holding the owner's pid.

The lock is the kernel's (`flock`), so it dies with the last process holding it: a lock
left behind by a killed process is simply taken over. A process that inherits the locked
descriptor (`fileno`) holds it too, as the local pipeline's services do. The pid in the
file only names the owner in the message another process gets.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class FolderInUse(RuntimeError):
    """Another live process holds the lock."""


class FolderLock:
    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what  # how the message names what is locked
        self._fd: int | None = None

    @classmethod
    def beside(cls, folder: Path, what: str) -> FolderLock:
        """The lock of `folder`, in `<folder>.lock` beside it (not inside: a store owns its folder)."""
        return cls(folder.with_name(folder.name + ".lock"), what)

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by children
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            holder = f"process {owner}"
            if owner.isdigit() and not _alive(int(owner)):  # its children inherited the lock
                holder = f"the processes that process {owner} started (it has exited; they are stopping)"
            raise FolderInUse(f"{self.what} is in use by {holder} (lock {self.path})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def fileno(self) -> int | None:
        """The locked file's descriptor while held: a process that inherits it holds the lock too."""
        return self._fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True
