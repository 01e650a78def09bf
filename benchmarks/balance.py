"""How evenly torchrun's processes share a run's units of work: largest-first claiming against a static round-robin.

    python benchmarks/balance.py                    # the paper's comparison (--method paper), 3 seeds, 1, 8, 16 GPUs
    python benchmarks/balance.py --methods Ghost_reduced_v1 --seeds 1 --processes 2 4 8   # CLR alone
    python benchmarks/balance.py --stat MY_STAT.csv --epochs 30

The units are those a run makes, as each method's family plans them (training.families), with the same labels: each
task of an isolated method for each seed, and each shared-backbone method's whole sequence for each seed (its tasks
depend on each other, so one process learns them all). A unit's cost is training.work.task_cost, from the stat file's
counts, (train + val images) x epochs, the work of a task that never stops early; a
sequence costs the sum of its tasks'. Costs count images, not time: a method that computes more per image (a full
fine-tune, PackNet's retraining epochs) takes longer than its share. Each process's load is the sum of its units'
costs; the run takes as long as the busiest process, so max/mean load is the slowdown against a perfect split
(1.000). Largest-first is what training.distributed does: a free process takes the largest unit nobody has claimed
yet. Round-robin gives process p the units p, p+P, p+2P, ... of the run order. No split can beat
max(1, largest unit / mean load): where the largest unit alone exceeds a process's fair share, it sets the pace.
"""
import argparse
import heapq
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import continual  # noqa: E402,F401  (the shared-backbone methods register as it is imported)
from dataset.sources import DEFAULT_STAT, read_stat  # noqa: E402
from dataset.task import TaskInfo  # noqa: E402
from network import METHOD_SETS, expand_methods  # noqa: E402
from training.distributed import largest_first  # noqa: E402  (the order the processes claim units in)
from training.families import family_of  # noqa: E402  (the units a run makes, with their labels and costs)


def unit_costs(tasks: Sequence[TaskInfo], methods: Sequence[str], seeds: int, epochs: int) -> list[tuple[str, int]]:
    """The run's units in run order (seed by seed, method by method), each as (label, cost), as main.py's run of
    seeds 0 .. seeds-1 makes them."""
    return [unit for seed in range(seeds) for method in methods
            for unit in family_of(method).costed(method, seed, tasks, epochs)]


def largest_first_loads(costs: Sequence[int], processes: int) -> list[int]:
    """Each process's load when whichever process is free first claims the next unit of the largest-first order."""
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


def format_table(rows: list[dict], units: Sequence[tuple[str, int]], tasks: int, methods: Sequence[str], seeds: int,
                 epochs: int) -> str:
    costs = [cost for _, cost in units]
    largest = max(range(len(costs)), key=costs.__getitem__)
    lines = [f"{tasks} tasks, {len(methods)} method(s) ({' '.join(methods)}), {seeds} seed(s): {len(units)} units, "
             f"cost = (train + val images) x {epochs} epochs, {sum(costs):,} image-epochs in all; largest unit "
             f"{units[largest][0]} ({costs[largest]:,})",
             "processes | largest-first max/mean | round-robin max/mean | best possible | set by"]
    for row in rows:
        limit = "the largest unit" if row["bound"] > 1 else "the total"
        lines.append(f"{row['processes']:>9} | {row['largest_first']:>22.3f} | {row['round_robin']:>20.3f} | "
                     f"{row['bound']:>13.3f} | {limit}")
    lines.append(f"The largest unit alone exceeds a process's fair share from {sum(costs) // costs[largest] + 1} "
                 "processes on.")
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stat", type=Path, default=DEFAULT_STAT, help="task list (default: the 53 DCT tasks)")
    parser.add_argument("--methods", nargs="+", default=["paper"], help="methods or named sets, as --method takes "
                        f"them (default paper: {' '.join(METHOD_SETS['paper'])})")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per method (default 3)")
    parser.add_argument("--epochs", type=int, default=60, help="epochs per task (default 60)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 8, 16], help="default 1 8 16")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = get_args_parser().parse_args(argv)
    tasks, methods = read_stat(args.stat), expand_methods(args.methods)
    units = unit_costs(tasks, methods, args.seeds, args.epochs)
    print(format_table(balance_table([cost for _, cost in units], args.processes), units, len(tasks), methods,
                       args.seeds, args.epochs))


if __name__ == "__main__":
    main()
