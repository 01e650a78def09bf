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


def warn(message: str) -> None:
    """A problem the run can carry on past: one line on stderr that does not break progress bars."""
    tqdm.write(f"warning: {message}", file=sys.stderr)
