"""The family objects (training.families): every method's family answers for it, the units a run makes are the ones
benchmarks/balance.py plans (labels and costs), and --fresh forgets through them exactly the selected tasks' files.
Nothing here trains: the end-to-end runs of test_main, test_continual and test_predict use the objects for real."""
from pathlib import Path

import pytest

import main
from benchmarks import balance
from dataset.task import TaskInfo, TaskSample
from network import METHODS, method_spec
from report.methods import accuracy_label
from training.context import Context
from training.families import AFTER_LAST_TASK, BEST_VALIDATION, ISOLATED_FAMILY, SHARED_FAMILY, family_of
from training.results import read_results, write_results
from training.settings import Layout, Recipe


def sample(order: int, name: str, train: int, val: int) -> TaskSample:
    """A task with ``train`` and ``val`` images (paths only: nothing here reads them), its stat counts agreeing."""
    task = TaskInfo(order=order, task_id=10 + order, name=name, class_num=2, train_num=train, val_num=val)
    return TaskSample(task, ("a", "b"), tuple((f"{name}/t{i}.png", i % 2) for i in range(train)),
                      tuple((f"{name}/v{i}.png", i % 2) for i in range(val)))


SAMPLES = [sample(0, "shapes", 90, 10), sample(1, "stripes", 40, 12), sample(2, "blob", 7, 3)]


def context(method: str, layout: Layout, seed: int = 0, epochs: int = 3) -> Context:
    """A run's context as far as planning and forgetting read it (no backbone, data or device)."""
    return Context(method=method, arch="resnet18", backbone=None, backbone_id="none:seed0", image_size=32, input=None,
                   source=None, recipe=Recipe(epochs=epochs, seed=seed), runtime=None, layout=layout)


def test_every_method_has_its_familys_object():
    for method in METHODS:
        family = family_of(method)
        assert family.family is method_spec(method).family and method in family.methods
        assert family.task_mapper == (family is ISOLATED_FAMILY)
    assert ISOLATED_FAMILY.accuracy_kind == BEST_VALIDATION and SHARED_FAMILY.accuracy_kind == AFTER_LAST_TASK
    assert set(ISOLATED_FAMILY.methods) | set(SHARED_FAMILY.methods) == set(METHODS)
    assert accuracy_label("PackNet") == "PackNet (after the last task)"


def test_balance_plans_the_units_main_makes(tmp_path):
    """For the same tasks, methods, seeds and epochs, balance.py's units are main.py's, label for label and cost for
    cost, in the same order, from the stat counts alone."""
    methods, seeds, epochs = ["Ghost_reduced_v1", "EWC", "Linear", "PackNet"], 2, 3
    layout = Layout(tmp_path / "result", tmp_path / "weight")
    made = [(unit.label, unit.cost) for seed in range(seeds) for method in methods
            for unit in main.units_of(context(method, layout, seed, epochs), SAMPLES)]
    assert made == balance.unit_costs([s.task for s in SAMPLES], methods, seeds, epochs)
    assert made[:4] == [("Ghost_reduced_v1 seed 0 shapes", 300), ("Ghost_reduced_v1 seed 0 stripes", 156),
                        ("Ghost_reduced_v1 seed 0 blob", 30), ("EWC seed 0", 486)]


def test_only_a_family_with_the_task_mapper_is_handed_the_anchor_step(tmp_path, monkeypatch):
    handed = {}

    def units(ctx, samples, task_done=None):
        handed[ctx.method] = task_done
        return []

    for family in (ISOLATED_FAMILY, SHARED_FAMILY):
        monkeypatch.setattr(family, "units", units)
    layout = Layout(tmp_path / "result", tmp_path / "weight")
    for method in ("Ghost_reduced_v1", "EWC"):
        main.units_of(context(method, layout), SAMPLES)
    assert callable(handed["Ghost_reduced_v1"]) and handed["EWC"] is None


def touch(*paths: Path) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def task_files(ctx: Context, task: TaskInfo) -> list[Path]:
    return [ctx.weight_path(task), ctx.resume_path(task), ctx.log_path(task), ctx.metrics_path(task)]


def write_rows(ctx: Context) -> None:
    write_results(ctx.csv_path, {s.task.task_id: {"task_id": s.task.task_id, "task_name": s.task.name,
                                                  "best_acc": 0.5} for s in SAMPLES})


@pytest.mark.parametrize("method", ["Ghost_reduced_v1", "LwF"])
def test_fresh_forgets_the_selected_tasks_through_the_family(tmp_path, method):
    """--fresh of the first task: its files and CSV row go; the other tasks' weights, rows and every other method's
    files stay. A shared method also loses its sequence state, matrix, later phases' files and tuning."""
    layout = Layout(tmp_path / "result", tmp_path / "weight")
    ctx, other = context(method, layout), context("SGD", layout)
    first, rest = SAMPLES[0].task, [s.task for s in SAMPLES[1:]]
    sequence = [layout.after_task(method), layout.matrix_csv(method), layout.resume(first.name, f"{method}.phase2"),
                layout.metrics(first.name, f"{method}.phase2"), layout.tuning_table(method),
                *(folder / "lr=0.001" / "score.json" for folder in layout.tuning_folders(method))]
    kept = [ctx.weight_path(task) for task in rest] + task_files(other, first) + [layout.after_task("SGD")]
    touch(*task_files(ctx, first), *sequence, *kept)
    write_rows(ctx)
    write_rows(other)
    family_of(method).forget(ctx, SAMPLES[:1])
    assert not any(path.exists() for path in task_files(ctx, first))
    assert all(path.exists() for path in kept)
    assert all(path.exists() != (family_of(method) is SHARED_FAMILY) for path in sequence)
    assert sorted(read_results(ctx.csv_path)) == [task.task_id for task in rest]
    assert len(read_results(other.csv_path)) == len(SAMPLES)
