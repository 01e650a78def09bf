"""The errors that end a run with one ``error:`` line (main.py prints them without a traceback), and warnings."""
import sys

from tqdm import tqdm


class ClrError(Exception):
    """A problem the user can act on: main.py prints it as one ``error:`` line and exits 2."""


class DatasetError(ClrError):
    """A problem with the user's data or data options."""


class NetworkError(ClrError):
    """A problem with the user's model options, backbone weights or a task's saved state."""


class RunError(ClrError):
    """A problem with the run's options, its output folders or its saved files."""


class WriteError(RunError, OSError):
    """A file could not be written (a full disk, no permission). A RunError, so a run stops with one line naming
    the file and the system's reason; an OSError too (errno, strerror, filename), so a write whose failure only
    costs time (the cache, an anchor) can catch it with the OSErrors it already catches."""

    def __init__(self, path: object, error: OSError) -> None:
        OSError.__init__(self, error.errno, error.strerror or str(error), str(path))
        self.message = (f"cannot write {path}: {self.strerror}; nothing half-written was left. Free some space "
                        "(or choose another folder) and rerun the same command")

    def __str__(self) -> str:
        return self.message


class Terminated(BaseException):
    """SIGTERM, as a scheduler sends it at preemption or the time limit: unwinds the run like Ctrl-C."""


def warn(message: str) -> None:
    """A problem the run can carry on past: one line on stderr that does not break progress bars."""
    tqdm.write(f"warning: {message}", file=sys.stderr)


def stop_line(error: BaseException) -> str:
    """The one line a stopped run prints: the error, or what to do after Ctrl-C or SIGTERM."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted: rerun the same command to continue where it stopped"
    if isinstance(error, Terminated):
        return "stopped by SIGTERM: rerun the same command to continue where it stopped"
    if isinstance(error, OSError) and not isinstance(error, ClrError):  # a file the code did not expect to fail
        return f"error: {error.filename or 'a file'}: {error.strerror or error}"
    return f"error: {error}"
