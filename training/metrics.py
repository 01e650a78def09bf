"""A task's per-epoch metrics as JSON lines (Layout.metrics): what each epoch's log line says and what it cost, for
programs to read (the report's training curves, benchmarks/acceptance.py) instead of the log's wording."""
import json
from pathlib import Path

from common.files import atomic_write_text


def write_epochs(path: Path, epochs: list[dict]) -> None:
    """Rewrite the whole file, one JSON object per epoch and line, atomically: a crash leaves the previous version,
    never half a line. Its folder is the task's result folder, which the task's log has made."""
    atomic_write_text(path, "".join(json.dumps(epoch) + "\n" for epoch in epochs))


def read_epochs(path: Path) -> list[dict]:
    """The epochs a metrics file records, in order; none where there is no file (a task of an older run)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
