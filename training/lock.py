"""One run per --weight folder, held with an OS lock that dies with its process: a killed run leaves no stale lock."""
import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from common.errors import RunError


@contextlib.contextmanager
def run_lock(path: Path, holder: bool = True) -> Iterator[None]:
    """Hold the weight folder's lock file ``path`` for the block, or stop at once if another run holds it. Only the
    ``holder`` takes it: in a torchrun job that is the leader, for the whole job, and the job's other processes
    share the folder."""
    if not holder:
        yield
        return
    with path.open("a") as file:  # never deleted or replaced: the lock belongs to this file's inode
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(f"another run is using the weight folder {path.parent} (it holds {path}): wait for it to "
                           "finish or stop it, or pass another --weight folder") from None
        yield


@contextlib.contextmanager
def run_locks(paths: list[Path], holder: bool = True) -> Iterator[None]:
    """Hold every lock of ``paths`` (a run with several seeds: the top weight folder's and each seed folder's), so
    that no other run uses any of those folders meanwhile."""
    with contextlib.ExitStack() as stack:
        for path in dict.fromkeys(paths):
            stack.enter_context(run_lock(path, holder))
        yield
