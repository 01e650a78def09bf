"""Atomic file writes, so a crash, Ctrl-C or a full disk never leaves a truncated file behind, and the one CSV
writer. A write that fails raises WriteError, one line naming the file and the system's reason."""
import csv
import io
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

from common.errors import WriteError


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; it replaces ``path`` only if the block completes. An OSError
    while writing (the block's, or the rename's) becomes a WriteError naming ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as error:
        raise WriteError(path, error) from None
    finally:
        tmp.unlink(missing_ok=True)


def save_torch(value: object, path: str | os.PathLike) -> None:
    """``torch.save`` atomically. The file is serialised in memory first, so a full disk fails in Python's own
    write, with the system's reason, rather than inside torch's writer with an internal message."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


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
