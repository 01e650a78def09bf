"""Several processes, GPUs and machines under torchrun: who this process is, its device, its tasks, and waiting.

torchrun gives each process RANK, WORLD_SIZE and LOCAL_RANK. Without them this is a plain run of one process and
every function here answers for that one process without any communication. CLR's tasks are independent, so the
processes never exchange tensors: they share a counter in the job's c10d store, to hand out tasks, and wait for each
other at barriers of a gloo process group, on CUDA too: NCCL refuses two processes on one GPU, a supported layout
here (and a waiting NCCL collective would keep a GPU kernel spinning beside a neighbour's training).
"""
import contextlib
import os
import socket
import uuid
from collections.abc import Iterator, Sequence
from datetime import timedelta

import torch
import torch.distributed as dist

from common.errors import RunError

# A process that is done waits at the final barrier while the others finish their last task, which can take hours:
# far longer than gloo's default 30 minutes. A process that crashes ends the job through torchrun, not this limit.
WAIT_LIMIT = timedelta(days=7)
COUNTER = "next_task"


def is_torchrun() -> bool:
    """Whether this process is one of a job's processes (torchrun, or any launcher that sets RANK and WORLD_SIZE)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def rank() -> int:
    return int(os.environ.get("RANK", 0))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", 1))


def is_leader() -> bool:
    """The one process that writes the shared files (manifests, <method>.csv, report.md): rank 0, or a plain run."""
    return rank() == 0


def describe() -> str:
    return f"process {rank()} of {world_size()} on {socket.gethostname()}"


@contextlib.contextmanager
def process_group() -> Iterator[None]:
    """Join the job's gloo process group for the block (nothing to join in a plain run)."""
    if not is_torchrun():
        yield
        return
    dist.init_process_group("gloo", timeout=WAIT_LIMIT)
    try:
        yield
    finally:
        dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """This process's device: under torchrun cuda:LOCAL_RANK modulo the GPUs it sees, so one GPU can serve several
    processes. It becomes the current device, which the CUDA RNG state of a resume point is read from."""
    if device.type != "cuda" or not is_torchrun():
        return device
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    torch.cuda.set_device(device)
    return device


@contextlib.contextmanager
def with_the_others() -> Iterator[None]:
    """Turn a collective's failure, which means another process of the job stopped first, into one line here: the
    reason is in that process's own error."""
    try:
        yield
    except RuntimeError:  # what gloo raises when a peer's connection drops
        raise RunError(f"{describe()}: another process of this job stopped, so this one stops too "
                       "(the other's error says why)") from None


def barrier() -> None:
    """Wait until every process of the job gets here. Monitored, so a timeout names the ranks that did not come."""
    if is_torchrun():
        with with_the_others():
            dist.monitored_barrier(timeout=WAIT_LIMIT, wait_all_ranks=True)


@contextlib.contextmanager
def leader_first() -> Iterator[None]:
    """Run the block on the leader first, then on the others, which find its work (a download, a folder) done."""
    if not is_leader():
        barrier()
    yield
    if is_leader():
        barrier()


def largest_first(costs: Sequence[int]) -> list[int]:
    """Task indices by cost, largest first (ties in run order): the long tasks start early, short ones fill gaps."""
    return sorted(range(len(costs)), key=lambda index: -costs[index])


def claim(store: dist.Store, order: Sequence[int]) -> Iterator[int]:
    """Take the next task of ``order`` from the store's atomic counter whenever the caller asks for one, until none
    is left. Every process draws distinct numbers, so each task goes to exactly one process."""
    while (drawn := store.add(COUNTER, 1)) <= len(order):
        yield order[drawn - 1]


def job_store() -> dist.Store:
    """This launch's own namespace in the job's c10d store. The store outlives a worker restart within one torchrun
    launch, so the leader names a fresh namespace and the others wait for its name."""
    name = [uuid.uuid4().hex if is_leader() else None]
    with with_the_others():
        dist.broadcast_object_list(name, src=0)
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                          timeout=timedelta(minutes=5))
    return dist.PrefixStore(f"clr/{name[0]}/", store)


def my_tasks(costs: Sequence[int]) -> Iterator[int]:
    """Indices of the tasks this process learns: in a plain run all of them in run order; under torchrun the next
    largest unclaimed task each time this process is free, so no process idles while a task is left."""
    if not is_torchrun():
        yield from range(len(costs))
        return
    yield from claim(job_store(), largest_first(costs))
