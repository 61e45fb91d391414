"""One ``fit`` at a time per run folder: the lock ``run_folder.py`` takes before it checks, deletes or writes.

``flock`` where the filesystem has it (the operating system drops it when its process ends, however it ends);
where it has not (some network disks), a file naming host and process, created only if absent.
"""

import errno
import fcntl
import os
import socket
from pathlib import Path
from typing import IO

from lit_tutorial.checkpointing import checkpoint_dir
from lit_tutorial.errors import UserError


class RunLock:
    """Only one ``fit`` at a time may write into a run folder: an exclusive lock on ``<root>/.lock``.

    The operating system drops the lock when its process ends, however it ends, so a killed run never leaves it
    stuck. Held by the process the user started (DDP's global rank 0).
    """

    def __init__(self, root: str | Path) -> None:
        self.path = Path(root) / ".lock"
        self._file: IO | OwnerFileLock | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+")
        except OSError as error:  # a name too long was refused before (errors.require_short_names)
            raise UserError(f"cannot create {self.path.parent} ({error.strerror}); give a --trainer.default_root_dir "
                            "that you can write to.") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise UserError(
                f"another fit is writing into {self.path.parent} (process {holder}); wait for it to finish, "
                "or give this run its own --trainer.default_root_dir."
            ) from None
        except OSError as error:  # a filesystem without flock (some network disks): a lock file instead
            handle.close()
            self._file = OwnerFileLock(self.path.with_suffix(".owner")).acquire(error)
        else:
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            self._file = handle
        # Whatever a killed save left behind: no other process writes here while the lock is held.
        for stale in checkpoint_dir(self.path.parent).glob("*.tmp"):
            stale.unlink(missing_ok=True)

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS}


class OwnerFileLock:
    """The run lock where ``flock`` is not supported: a file created only if absent, naming host and process.

    A run killed on this host leaves it behind; the next run on this host sees that process gone and takes over.
    A file left by a run killed on another host cannot be checked from here: the refusal says to delete it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def acquire(self, why: OSError) -> "OwnerFileLock":
        if why.errno not in NO_FLOCK:
            raise why
        me = f"{socket.gethostname()} {os.getpid()}"
        for _ in range(2):
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                host, _, pid = self.path.read_text().partition(" ")
                if host != socket.gethostname() or not pid.isdigit() or _alive(int(pid)):
                    break
                self.path.unlink(missing_ok=True)  # left by a killed run on this host
                continue
            with os.fdopen(descriptor, "w") as file:
                file.write(me)
            return self
        raise UserError(
            f"another fit is writing into {self.path.parent} (process {pid or '?'} on host {host or '?'}); this "
            f"filesystem has no flock, so {self.path} marks the folder in use: wait for that run to finish, or "
            "delete the file if no run uses the folder any more."
        )

    def close(self) -> None:
        self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
