"""How evenly torchrun's processes share the 53 tasks: largest-first claiming against a static round-robin.

    python benchmarks/balance.py                    # stat.csv, 60 epochs, 2, 4 and 8 processes
    python benchmarks/balance.py --processes 2 3 16 --stat MY_STAT.csv

A task's cost is (train + val images) x epochs, the work of a task that never stops early. Each process's load is
the sum of its tasks' costs; the run takes as long as the busiest process, so max/mean load is the slowdown against
a perfect split (1.000). Largest-first is what training.distributed does: a free process takes the largest task
nobody has claimed yet. Round-robin gives process p the tasks p, p+P, p+2P, ... of the run order. No split can beat
max(1, largest task / mean load): where the largest task alone exceeds a process's fair share, it sets the pace.
"""
import argparse
import heapq
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dataset.sources import DEFAULT_STAT, read_stat  # noqa: E402
from training.distributed import largest_first  # noqa: E402  (the order the processes claim tasks in)


def largest_first_loads(costs: Sequence[int], processes: int) -> list[int]:
    """Each process's load when whichever process is free first claims the next task of the largest-first order."""
    free_at = [(0, process) for process in range(processes)]
    for index in largest_first(costs):
        load, process = heapq.heappop(free_at)
        heapq.heappush(free_at, (load + costs[index], process))
    return [load for load, _ in sorted(free_at, key=lambda entry: entry[1])]


def round_robin_loads(costs: Sequence[int], processes: int) -> list[int]:
    return [sum(costs[process::processes]) for process in range(processes)]


def max_over_mean(loads: Sequence[int]) -> float:
    return max(loads) / (sum(loads) / len(loads))


def balance_table(costs: Sequence[int], processes: Sequence[int]) -> list[dict]:
    """Per process count: max/mean load of both schemes and the best any split can do."""
    return [{"processes": count,
             "largest_first": max_over_mean(largest_first_loads(costs, count)),
             "round_robin": max_over_mean(round_robin_loads(costs, count)),
             "bound": max(1.0, max(costs) / (sum(costs) / count))} for count in processes]


def format_table(rows: list[dict], costs: Sequence[int], names: Sequence[str], epochs: int) -> str:
    largest = max(range(len(costs)), key=costs.__getitem__)
    lines = [f"{len(costs)} tasks, cost = (train + val images) x {epochs} epochs, "
             f"{sum(costs):,} image-epochs in all; largest task {names[largest]} ({costs[largest]:,})",
             "processes | largest-first max/mean | round-robin max/mean | best possible | set by"]
    for row in rows:
        limit = "the largest task" if row["bound"] > 1 else "the total"
        lines.append(f"{row['processes']:>9} | {row['largest_first']:>22.3f} | {row['round_robin']:>20.3f} | "
                     f"{row['bound']:>13.3f} | {limit}")
    lines.append(f"The largest task alone exceeds a process's fair share from {sum(costs) // costs[largest] + 1} "
                 "processes on.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stat", type=Path, default=DEFAULT_STAT, help="task list (default: the 53 DCT tasks)")
    parser.add_argument("--epochs", type=int, default=60, help="epochs per task (default 60)")
    parser.add_argument("--processes", type=int, nargs="+", default=[2, 4, 8], help="default 2 4 8")
    args = parser.parse_args(argv)
    tasks = read_stat(args.stat)
    costs = [(task.train_num + task.val_num) * args.epochs for task in tasks]
    print(format_table(balance_table(costs, args.processes), costs, [task.name for task in tasks], args.epochs))


if __name__ == "__main__":
    main()
