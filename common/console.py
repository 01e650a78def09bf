"""The console: the run's log lines, printed without breaking the progress bars, and the line a stopped run
prints."""
import logging
import sys

from tqdm import tqdm

from common.errors import stop_line


class TqdmHandler(logging.StreamHandler):
    """Log lines written through tqdm, so a progress bar on the terminal is redrawn below them. Each line, its
    newline included, reaches stdout in one write: under torchrun the processes share one stdout, and a pipe takes a
    write of under 4 KiB whole, whereas a block-buffered stream would flush at any byte and cut another process's
    line in two."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record) + "\n", file=sys.stdout, end="")
        sys.stdout.flush()


class TransientBar(tqdm):
    """A progress bar that disappears when its loop ends (``leave=False``) but stays, its line ended, when an error
    stops the loop. tqdm's own iterator closes the bar while the error unwinds through the loop, before any
    handler runs (on Python 3.12 even in a comprehension), and a closing transient bar erases itself with a carriage
    return, which ends no line in a log file: the stop line would then follow the bar's text on the same line."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, leave=False, **kwargs)

    def __iter__(self):
        items = super().__iter__()
        try:
            for item in items:  # noqa: UP028 (``yield from`` would close ``items`` before the flag below is set)
                yield item
        except GeneratorExit:  # the loop was left before its end: ``items`` closes the bar after this, keeping it
            self.leave = True
            raise


def console_log(name: str = "clr") -> logging.Logger:
    """The project's logger, printing INFO and above to stdout (set up once per process)."""
    log = logging.getLogger(name)
    if not log.handlers:
        log.addHandler(TqdmHandler())
        log.setLevel(logging.INFO)
    return log


def print_stop_line(error: BaseException) -> None:
    """Print the one line a stopped run ends with (``stop_line``) on stderr, starting at column 0: every open
    progress bar is closed first and its line ended, on a terminal and in a log file alike (a bar that would vanish
    is left showing where the run stopped, since clearing it with carriage returns ends no line in a file)."""
    inner_first = sorted(getattr(tqdm, "_instances", ()), key=lambda bar: -abs(getattr(bar, "pos", 0)))
    for bar in inner_first:
        bar.leave = True
        bar.close()
    print(stop_line(error), file=sys.stderr)
