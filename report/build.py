"""The end of every run, and all of --report: verify, then write report.md, results_wide.csv, verification.json
and the figures."""
import argparse
import json
from pathlib import Path

from common.errors import RunError
from common.files import atomic_write_text
from dataset.sources import open_data, select_tasks
from dataset.task import TaskInfo, TaskSample
from inference.agnostic import write_task_agnostic
from report import compare, figures, tuning
from report.inputs import MethodResults, tasks_from_results
from report.methods import find_methods, method_label, read_methods
from report.tables import (accuracy_frame, bytes_frame, matrix_markdown, params_frame, per_task_markdown,
                           summary_frame, summary_markdown, task_agnostic_markdown, task_frame, wide_csv)
from report.verify import verify_method
from training.context import Context
from training.results import CSV_HEADER
from training.settings import Layout, prepare_output_folder
from training.verification import Verification, describe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("report")
    group.add_argument("--report", action="store_true", help="rebuild report.md, results_wide.csv and figures/ "
                       "from the --result and --weight folders without training (every method found there)")
    group.add_argument("--no-verify", action="store_true", help="do not re-evaluate saved tasks: a training run "
                       "ends with its report unverified (it says --no-verify), and --report --no-verify needs no "
                       "device, no backbone and no --data")


def require_results(layout: Layout) -> None:
    """--report on a folder without results stops at once, before any data or device is touched."""
    if not find_methods(layout):
        seeds = " ".join(map(str, layout.seeds_found()))
        hint = f" (it holds the folders of a run over several seeds: pass --seeds {seeds})" if seeds else ""
        raise RunError(f"no results to report in {layout.result}: no <method>.csv with the header "
                       f"{','.join(CSV_HEADER)}{hint}")


def tasks_on_disk(layout: Layout, data: Path | None, stat: Path | None, wanted: list[str] | None) -> list[TaskInfo]:
    """The tasks --report --no-verify covers: the data's, or without --data those in the results, in the stat
    file's order."""
    if data is not None:
        return select_tasks(open_data(data, stat).tasks, wanted)
    return tasks_from_results(layout, find_methods(layout), stat, wanted)


def settings_line(results: MethodResults, check: Verification) -> str:
    configs = sorted({describe(record.config) for record in results.records.values()})
    kind = ["shared backbone"] if results.shared_backbone else ["isolated per-task state"] if configs else []
    return f"- **{method_label(results.name)}** ({'; '.join(kind + (configs or ['no weights files']))}): " \
           + check.summary()


def report_text(results: list[MethodResults], checks: dict[str, Verification], tables: dict, figure_paths,
                layout: Layout) -> str:
    tasks, accuracy, params, summary = tables["tasks"], tables["accuracy"], tables["params"], tables["summary"]
    comparison = tables["comparison"]
    names = ", ".join(method_label(r.name) for r in results)
    sections = [
        f"# Per-task results: {names}, {len(tasks)} task(s)",
        *([comparison.unfinished_line()] if comparison.unfinished else []),
        "## Methods and verification\n\n" + "\n".join(settings_line(r, checks[r.name]) for r in results)
        + "\n\nIsolated methods store each task's state apart from every other's, so their backward transfer "
        "(BWT) is 0 by construction; it is shown as 0.00 where every task re-evaluated equal to its record.",
        *filter(None, [tuning.seed_section(layout, [r.name for r in results])]),
        "## Summary\n\n" + summary_markdown(summary, checks, len(comparison.accuracy))
        + "\n\nThe compared tasks are those of the methods that finished every task (an unfinished method has no "
        "value there: see the next section). With one seed no interval can be given for these numbers; `--seeds` runs "
        "several, and the report across them gives each average with its 95% interval.",
        compare.section(comparison, compare.ONE_SEED_VALUES + ": `--seeds` runs several, and the report across them "
                        "ranks each task's mean", figure_paths, layout.result),
        "## Per task\n\nAccuracy is the best validation accuracy of an isolated method and, for a shared-backbone "
        "method, its accuracy after the last task; params % is the extra parameters the task adds, in "
        "% of the backbone (the average row is the mean per task). The summary's \"stored per task\" counts bytes: a "
        "float at its size, a binary mask at one bit per weight, ER's kept images.\n\n"
        + per_task_markdown(tasks, accuracy, params, comparison.accuracy),
    ]
    sections += ["## Forgetting\n\n" + "\n\n".join(matrix_markdown(r) for r in results if r.matrix is not None)
                 ] if any(r.matrix is not None for r in results) else []
    sections += ["## Task-agnostic\n\n" + "\n\n".join(task_agnostic_markdown(r) for r in results
                                                     if r.task_agnostic is not None)
                 ] if any(r.task_agnostic is not None for r in results) else []
    sections.append("## Figures\n\n" + "\n".join(f"- [{path.name}]({path.relative_to(layout.result).as_posix()})"
                                                 for path in figure_paths if path.suffix == ".png"))
    return "\n\n".join(sections) + "\n"


def draw_figures(tables: dict, results: list[MethodResults], folder: Path) -> list[Path]:
    prepare_output_folder(folder, "figures")
    comparison = tables["comparison"]
    paths = figures.per_task_accuracy(tables["tasks"], tables["accuracy"], folder)
    summary = tables["summary"]
    paths += figures.accuracy_vs_parameters(summary.bytes_per_task, summary.compared_average, folder,
                                            f"average accuracy over the {len(comparison.accuracy)} tasks (%)")
    paths += figures.comparison_figures(comparison, tables["tasks"], tables["accuracy"], folder,
                                        "Accuracy (%) per task, tasks in run order")
    paths += figures.training_curves(tables["tasks"], results, folder)
    for r in results:
        if r.matrix is not None:
            paths += figures.accuracy_matrix(r, folder)
    return paths


def write_report(layout: Layout, tasks: list[TaskInfo], contexts: list[Context] | None = None) -> str:
    """Tables and figures for every method with results in the result folder over ``tasks`` (in run order). With
    ``contexts`` (None: --no-verify), every method's saved tasks are re-evaluated first, with the context of that
    method (a method found in the folder but not run now: the first context's): an isolated method's tasks that match
    its backbone, image size and data, and a shared-backbone method's tasks on its final model rebuilt from its
    after-task file; a mismatch is an error, raised after everything is written."""
    results = read_methods(layout, tasks)
    if not results:
        raise RunError(f"no results for the selected task(s) in {layout.result}")
    samples = {}
    by_method = {ctx.method: ctx for ctx in contexts or []}
    checks = {r.name: verify_method(by_method.get(r.name, contexts[0]) if contexts else None, r, tasks, samples)
              for r in results}
    frame = task_frame(tasks, results)
    accuracy, params, stored = accuracy_frame(frame, results), params_frame(frame, results), bytes_frame(frame, results)
    comparison = compare.Comparison.of(accuracy)
    tables = {"tasks": frame, "accuracy": accuracy, "params": params, "comparison": comparison,
              "summary": summary_frame(accuracy, params, stored, results, checks, comparison.accuracy)}
    figure_paths = draw_figures(tables, results, layout.figures)
    text = report_text(results, checks, tables, figure_paths, layout)
    atomic_write_text(layout.results_wide, wide_csv(frame, accuracy, params, stored))
    atomic_write_text(layout.verification, json.dumps({name: check.as_dict() for name, check in checks.items()},
                                                      indent=2) + "\n")
    atomic_write_text(layout.report, text)
    mismatches = [m for r in results for m in checks[r.name].mismatches]
    if mismatches:
        print(text)
        raise RunError(f"re-evaluation differs from the recorded accuracy for {len(mismatches)} task(s): "
                       + "; ".join(mismatches))
    return text


def report_run(contexts: list[Context], tasks: list[TaskInfo], task_agnostic: list[Context], *, verify: bool) -> None:
    """The end of a run, and --report, for the methods of one result folder: for each context of
    ``task_agnostic`` (the isolated methods), answer every finished task's validation images without task labels;
    then verify every method's saved tasks (unless not ``verify``: --no-verify) and write the tables and figures."""
    samples: dict[int, TaskSample] = {}  # each task sampled once, however many methods finished it

    def sample_of(ctx: Context, task: TaskInfo) -> TaskSample:
        if task.task_id not in samples:
            samples[task.task_id] = ctx.source.sample(task)
        return samples[task.task_id]

    summaries = []
    for ctx in task_agnostic:
        finished = [sample_of(ctx, task) for task in tasks if ctx.weight_path(task).exists()]
        agnostic = write_task_agnostic(ctx, finished)
        if agnostic is not None:
            summaries.append(agnostic.summary())
    print(write_report(contexts[0].layout, tasks, contexts if verify else None))
    for summary in summaries:
        print(summary)
