"""One run per --weight folder, held with an OS lock that dies with its process: a killed run leaves no stale lock."""
import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from training.context import RunError

LOCK_FILE = ".clr-run.lock"


@contextlib.contextmanager
def run_lock(folder: Path, holder: bool = True) -> Iterator[None]:
    """Hold ``folder``'s lock for the block, or stop at once if another run holds it. Only the ``holder`` takes it:
    in a torchrun job that is the leader, for the whole job, and the job's other processes share the folder."""
    if not holder:
        yield
        return
    path = folder / LOCK_FILE
    with path.open("a") as file:  # never deleted or replaced: the lock belongs to this file's inode
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(f"another run is using the weight folder {folder} (it holds {path}): wait for it to "
                           "finish or stop it, or pass another --weight folder") from None
        yield
