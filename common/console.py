"""The console: the run's log lines, printed without breaking the progress bars."""
import logging
import sys

from tqdm import tqdm


class TqdmHandler(logging.StreamHandler):
    """Log lines written through tqdm, so a progress bar on the terminal is redrawn below them."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record), file=sys.stdout)


def console_log(name: str = "clr") -> logging.Logger:
    """The project's logger, printing INFO and above to stdout (set up once per process)."""
    log = logging.getLogger(name)
    if not log.handlers:
        log.addHandler(TqdmHandler())
        log.setLevel(logging.INFO)
    return log
