"""Decode, convert and resize each task's images once, in parallel, and cache the uint8 result on disk.

Without augmentation every epoch of the release sees the same pixels, so decoding them once per task
(instead of once per epoch) changes nothing but the time it takes.
"""
import hashlib
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from common.errors import DatasetError, warn
from common.files import save_torch
from dataset.images import open_rgb, resize_square
from dataset.sources import manifest_text
from dataset.task import Item, TaskSample

CACHE_FORMAT = 1  # bump when the cached layout or the decode changes, so old entries are never reused
MAX_CHUNK = 64  # images per job sent to a worker: big enough to amortise messaging, small enough to balance
FAILURES_SHOWN = 3

Failure = tuple[str, str]
"""An image that could not be read: its path (relative to the data root) and why."""


@dataclass
class TaskTensors:
    """One task's images, decoded and resized, with their labels (CPU tensors, possibly memory-mapped)."""

    train_images: torch.Tensor  # uint8 [N, 3, S, S]
    train_labels: torch.Tensor  # int64 [N]
    val_images: torch.Tensor
    val_labels: torch.Tensor


def default_workers() -> int:
    """Decode workers to use when the user does not say: one per core, at most 8."""
    return min(8, os.cpu_count() or 1)


def decode_images(root: Path, paths: Sequence[str], size: int | None, workers: int,
                  desc: str) -> np.ndarray | None:
    """Decode ``root/path`` for every path (RGB, resized to ``size`` x ``size``) into uint8 [N, 3, S, S].

    ``size=None`` only verifies that every image decodes and returns None. Every failure is
    collected first, so one error reports them all.
    """
    images, failures = _decode_all(root, paths, size, workers, desc)
    if failures:
        raise DatasetError(describe_failures(root, failures, len(paths)))
    return images


def unreadable_images(root: Path, paths: Sequence[str], workers: int, desc: str) -> list[Failure]:
    """Every image among ``paths`` that is missing or does not decode, with the reason."""
    return _decode_all(root, paths, None, workers, desc)[1]


def describe_failures(root: Path, failures: Sequence[Failure], total: int) -> str:
    """One line naming how many images failed and the first few, with why."""
    shown = "; ".join(f"{path}: {reason}" for path, reason in failures[:FAILURES_SHOWN])
    more = " ..." if len(failures) > FAILURES_SHOWN else ""
    return f"{len(failures)} of {total} images under {root} cannot be read: {shown}{more}"


def load_task_tensors(root: Path, sample: TaskSample, size: int, cache_dir: Path | None,
                      workers: int) -> TaskTensors:
    """The task's images as uint8 tensors, from ``cache_dir`` when a valid entry exists, else decoded."""
    if cache_dir is None:
        return _decode_task(root, sample, size, workers)
    cache_path = Path(cache_dir) / f"{task_cache_key(root, sample, size)}.pt"
    if cache_path.exists():
        cached = _read_cache(cache_path, sample, size)
        if cached is not None:
            return cached
    tensors = _decode_task(root, sample, size, workers)
    _write_cache(cache_path, tensors)
    return tensors


def task_cache_key(root: Path, sample: TaskSample, size: int) -> str:
    """Hash of everything the decoded tensors depend on: format, size, data root, manifest, image files.

    Each image's byte size and modification time are included, so an edited image gives a new key.
    """
    digest = hashlib.sha256()
    # surrogateescape: a data root whose name is not UTF-8 hashes as its bytes (other roots hash as before)
    digest.update(f"clr task tensors v{CACHE_FORMAT}\nsize {size}\nroot {Path(root).resolve()}\n"
                  .encode("utf-8", "surrogateescape"))
    digest.update(manifest_text(sample).encode())
    for path in sample.paths:
        try:
            stat = os.stat(Path(root) / path)
            digest.update(f"{stat.st_size} {stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(b"unreadable\n")  # decoding will report it
    return digest.hexdigest()


def _labels(items: Sequence[Item]) -> torch.Tensor:
    return torch.tensor([label for _, label in items], dtype=torch.int64)


def _decode_task(root: Path, sample: TaskSample, size: int, workers: int) -> TaskTensors:
    """Decode train and val in one parallel pass, then split (the two halves share one buffer)."""
    images = decode_images(root, sample.paths, size, workers,
                           desc=f"{sample.task.name}: decode")
    train_count = len(sample.train)
    tensor = torch.from_numpy(images)
    return TaskTensors(tensor[:train_count], _labels(sample.train), tensor[train_count:], _labels(sample.val))


def _read_cache(cache_path: Path, sample: TaskSample, size: int) -> TaskTensors | None:
    """The cached tensors, or None (after a one-line warning) when the entry is corrupt or inconsistent."""
    try:
        entry = torch.load(cache_path, weights_only=True, mmap=True)
    except Exception as error:  # torch/zip/pickle raise many types for a damaged file
        warn(f"cache entry {cache_path} is unreadable ({_one_line(error)}); rebuilding it")
        return None
    problem = _cache_problem(entry, sample, size)
    if problem:
        warn(f"cache entry {cache_path} is inconsistent ({problem}); rebuilding it")
        return None
    return TaskTensors(**entry)


def _cache_problem(entry: object, sample: TaskSample, size: int) -> str | None:
    """What makes a loaded cache entry unusable for this sample, or None if it fits."""
    names = [field.name for field in fields(TaskTensors)]
    if (not isinstance(entry, dict) or sorted(entry) != sorted(names)
            or not all(isinstance(entry[name], torch.Tensor) for name in names)):
        return "unexpected content"
    for split, items in (("train", sample.train), ("val", sample.val)):
        images, labels = entry[f"{split}_images"], entry[f"{split}_labels"]
        if images.dtype != torch.uint8 or tuple(images.shape) != (len(items), 3, size, size):
            return f"{split} images are {images.dtype} {tuple(images.shape)}"
        if labels.dtype != torch.int64 or not torch.equal(labels, _labels(items)):
            return f"{split} labels differ"
    return None


def _write_cache(cache_path: Path, tensors: TaskTensors) -> None:
    """Save atomically; a failure to write only costs the next run a decode, so it is a warning."""
    try:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        save_torch({field.name: getattr(tensors, field.name) for field in fields(TaskTensors)}, cache_path)
    except OSError as error:  # a WriteError too
        warn(f"cannot write cache entry {cache_path} ({error.strerror or _one_line(error)}); continuing without it")


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text[:200] if text else type(error).__name__


# --- the parallel decode ------------------------------------------------------------------------------

_Job = tuple[str, int, Sequence[str], int | None]  # root, index of the first image, paths, size
_JobResult = tuple[int, np.ndarray | None, list[tuple[int, str]]]  # first index, images, (offset, reason)


def _decode_all(root: Path, paths: Sequence[str], size: int | None, workers: int,
                desc: str) -> tuple[np.ndarray | None, list[Failure]]:
    """The one decode path: chunks of images go to worker processes; results land in a preallocated array."""
    count = len(paths)
    images = None if size is None else np.zeros((count, 3, size, size), dtype=np.uint8)
    chunk = max(1, min(MAX_CHUNK, -(-count // (max(workers, 1) * 8))))
    jobs = [(str(root), start, paths[start:start + chunk], size) for start in range(0, count, chunk)]
    failures: list[tuple[int, str]] = []
    with tqdm(total=count, desc=desc, unit="img", file=sys.stderr) as bar:
        for start, block, block_failures in _run_jobs(jobs, workers):
            if images is not None:
                images[start:start + len(block)] = block
            failures += [(start + offset, reason) for offset, reason in block_failures]
            bar.update(min(chunk, count - start))
    return images, [(paths[index], reason) for index, reason in sorted(failures)]


def _run_jobs(jobs: list[_Job], workers: int) -> Iterator[_JobResult]:
    """Run jobs in this process (workers=0 or a single job) or in a pool of worker processes."""
    if workers <= 0 or len(jobs) <= 1:
        yield from map(_decode_job, jobs)
        return
    # fork starts workers at once and shares the parent's imports; workers use only PIL and numpy
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    pool = ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context, initializer=_ignore_interrupts)
    try:
        for done in as_completed([pool.submit(_decode_job, job) for job in jobs]):
            yield done.result()
    except BrokenProcessPool:
        raise DatasetError("a decode worker process died (a decoder crashed on an image); "
                           "decoding with 0 workers shows which image") from None
    finally:
        pool.shutdown(cancel_futures=True)  # on Ctrl-C or an error, drop the jobs not yet started


def _ignore_interrupts() -> None:
    """Workers leave Ctrl-C to the parent, which cancels the jobs left and stops the pool."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _decode_job(job: _Job) -> _JobResult:
    """Decode one chunk; an image that fails stays zero and its reason is returned."""
    root, start, paths, size = job
    block = None if size is None else np.zeros((len(paths), 3, size, size), dtype=np.uint8)
    failures = []
    for offset, path in enumerate(paths):
        try:
            image = open_rgb(os.path.join(root, path))
            if block is not None:
                block[offset] = np.asarray(resize_square(image, size)).transpose(2, 0, 1)
        except FileNotFoundError:
            failures.append((offset, "file not found"))
        except Exception as error:  # decoders raise many types (OSError, ValueError, SyntaxError, ...)
            failures.append((offset, _one_line(error)))
    return start, block, failures
