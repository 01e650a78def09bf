"""Atomic file writes, so a crash or Ctrl-C never leaves a truncated file behind, and the one CSV writer."""
import csv
import io
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; it replaces ``path`` only if the block completes."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def csv_text(header: Sequence[str], rows: Iterable[Sequence | dict]) -> str:
    """A CSV with a header row and ``\\n`` line ends; rows are sequences, or dicts keyed by the header."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([row[key] for key in header] if isinstance(row, dict) else row for row in rows)
    return text.getvalue()


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence | dict]) -> None:
    """Write a CSV atomically (see ``csv_text``)."""
    atomic_write_text(path, csv_text(header, rows))
