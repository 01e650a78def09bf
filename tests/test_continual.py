"""The shared-backbone baselines (SGD, EWC, LwF, ER) end to end on small synthetic tasks: the accuracy matrix,
the weights files and CSV that follow from it, forgetting, resume after a kill, and the methods' own parts."""
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import continual
import continual.ewc
import main
from continual.er import ER, select_for_memory
from continual.ewc import EWC, diagonal_fisher
from dataset.images import IMAGENET
from dataset.synthetic import DEMO_TASKS
from dataset.task import TaskInfo, TaskSample
from network import MultiHeadModel, load_backbone
from tests.helpers import SMALL_TASKS, Kill, matrix_of, read_csv, small_args
from training.matrix import write_matrix
from training.settings import Recipe, runtime_for

TASKS = SMALL_TASKS
HEAD_ONLY = ("SGD", "EWC", "LwF", "ER")  # tested here; SI and PSP in test_si_psp.py, PackNet in test_packnet.py


def bwt(matrix: list[list[float]]) -> float:
    return sum(matrix[-1][i] - matrix[i][i] for i in range(len(matrix) - 1)) / (len(matrix) - 1)


def sgd_args(dct: Path, out: Path, *extra: str) -> list[str]:
    """SGD on the demo's first two tasks with all their images: the small cut learns too little to lose much."""
    return small_args(dct, out, "SGD", "--stat", str(dct / "stat.csv"), "--tasks", *SGD_TASKS, *extra)


SGD_TASKS = list(DEMO_TASKS[:2])
WARM_UP_EPOCHS = 2  # LwF's warm-up here: the paper's 10 would be most of the module's time


def method_args(small_tasks: Path, out: Path, method: str) -> list[str]:
    """A method on the small cut (LwF with a short warm-up)."""
    return small_args(small_tasks, out, method, *(["--lwf-warmup-epochs", str(WARM_UP_EPOCHS)] if method == "LwF"
                                                  else []))


@pytest.fixture(scope="module")
def runs(small_tasks, dct, tmp_path_factory) -> dict[str, tuple[Path, list[str]]]:
    """One uninterrupted run of each method: (its output folder, its tasks)."""
    outs = {"SGD": (tmp_path_factory.mktemp("SGD"), SGD_TASKS)}
    assert main.main(sgd_args(dct, outs["SGD"][0])) == 0
    for method in HEAD_ONLY[1:]:
        outs[method] = (tmp_path_factory.mktemp(method), TASKS)
        assert main.main(method_args(small_tasks, outs[method][0], method)) == 0
    return outs


@pytest.mark.slow
@pytest.mark.parametrize("method", HEAD_ONLY)
def test_matrix_weights_files_and_csv_agree(runs, method):
    out, tasks = runs[method]
    rows = read_csv(out / "result" / f"{method}_matrix.csv")
    assert list(rows[0]) == ["task_id", "task_name", *tasks]
    assert [row["task_name"] for row in rows] == tasks
    for t, row in enumerate(rows):  # R[t][i] filled for i <= t, empty after
        assert [row[name] != "" for name in tasks] == [i <= t for i in range(len(tasks))]
    matrix = matrix_of(out, method, tasks)
    assert all(0 <= value <= 1 for row in matrix for value in row)
    results = read_csv(out / "result" / f"{method}.csv")
    assert [float(row["best_acc"]) for row in results] == matrix[-1]
    for t, name in enumerate(tasks):
        saved = torch.load(out / "weight" / f"{name}_{method}.pt", weights_only=True)
        assert saved["shared_backbone"] is True and saved["config"]["method"] == method
        assert saved["best_acc"] == matrix[t][t] == saved["best_correct"] / saved["val_images"]
        assert sorted(saved["state"]) == ["fc.bias", "fc.weight"]
        assert saved["trainable_params"] == saved["state"]["fc.weight"].numel() + saved["state"]["fc.bias"].numel()
        assert len(saved["history"]) == saved["epochs_run"] == 2
        # LwF and ER train the earlier heads too: each record holds its head as the last task left it
        assert saved["state_after"] == (tasks[-1] if method in ("LwF", "ER") else name)
    assert not list((out / "weight").glob("*.resume.pt"))
    # the report rebuilt the final model (LwF's and ER's final heads) and re-evaluated each task to the last row
    assert json.loads((out / "result" / "verification.json").read_text())[method] == \
        {"equal": len(tasks), "mismatches": [], "skipped": {}}
    assert sorted(p.name for p in (out / "weight").glob(f"{method}_after_task.pt")) == [f"{method}_after_task.pt"]


def test_matrix_csv_bytes(tmp_path):
    """The matrix goes through the one CSV writer: quoted names, empty cells for tasks not learnt yet, floats as
    Python writes them."""
    samples = [TaskSample(TaskInfo(order, task_id, name), ("c",), (), ())
               for order, (task_id, name) in enumerate([(7, "shapes, round"), (9, "stripes"), (11, "blob")])]
    path = tmp_path / "SGD_matrix.csv"
    write_matrix(path, samples, [[0.5], [0.25, 1.0], [1 / 3, 0.1 + 0.2, 0.0]])
    assert path.read_text() == ('task_id,task_name,"shapes, round",stripes,blob\n'
                                '7,"shapes, round",0.5,,\n'
                                "9,stripes,0.25,1.0,\n"
                                "11,blob,0.3333333333333333,0.30000000000000004,0.0\n")


@pytest.mark.slow
def test_sgd_forgets(runs):
    matrix = matrix_of(runs["SGD"][0], "SGD", SGD_TASKS)
    assert all(matrix[i][i] > 0.7 for i in range(len(SGD_TASKS)))  # each task was learnt ...
    assert bwt(matrix) < -0.15  # ... and the second task cost the first one much of it


@pytest.mark.slow
def test_rerun_of_a_finished_sequence_trains_nothing(dct, runs, capsys):
    out = runs["SGD"][0]
    before = (out / "result" / "SGD_matrix.csv").read_text()
    assert main.main(sgd_args(dct, out)) == 0
    assert capsys.readouterr().out.count("already done") == len(SGD_TASKS)
    assert (out / "result" / "SGD_matrix.csv").read_text() == before


@pytest.mark.slow
def test_other_settings_are_refused_and_fresh_starts_over(small_tasks, runs, capsys):
    out = runs["EWC"][0]
    assert main.main(small_args(small_tasks, out, "EWC", "--ewc-lambda", "3")) == 2
    error = capsys.readouterr().err
    assert "other settings or data: --ewc-lambda 10.0 (now 3.0)" in error and "--fresh" in error
    assert main.main(small_args(small_tasks, out, "EWC", "--tasks", TASKS[0], "--epochs", "1", "--fresh")) == 0
    assert "already done" not in capsys.readouterr().out
    assert [row["task_name"] for row in read_csv(out / "result" / "EWC_matrix.csv")] == TASKS[:1]


@pytest.mark.slow
@pytest.mark.parametrize(("method", "at_call"), [("ER", 4), ("LwF", 4), ("LwF", 6)])
def test_killed_and_resumed_run_gives_the_same_matrix(small_tasks, runs, tmp_path, monkeypatch, method, at_call):
    """Killed in the second task's second epoch (ER), or in that task's warm-up's second epoch or its joint
    training's second epoch (LwF): the after-task state plus a resume point."""
    kill = Kill(monkeypatch, at_call=at_call)
    assert main.main(method_args(small_tasks, tmp_path, method)) == 130
    warm_up = method == "LwF" and at_call <= 2 + WARM_UP_EPOCHS
    assert (tmp_path / "weight" / f"{TASKS[1]}_{method}{'.phase2' if warm_up else ''}.resume.pt").exists()
    kill.disarm()
    assert main.main(method_args(small_tasks, tmp_path, method)) == 0
    for name in (f"{method}_matrix.csv", f"{method}.csv"):
        assert (tmp_path / "result" / name).read_text() == (runs[method][0] / "result" / name).read_text()
    for task in TASKS:
        resumed = torch.load(tmp_path / "weight" / f"{task}_{method}.pt", weights_only=True)["state"]
        reference = torch.load(runs[method][0] / "weight" / f"{task}_{method}.pt", weights_only=True)["state"]
        assert all(torch.equal(resumed[key], reference[key]) for key in reference)


def test_diagonal_fisher_is_the_mean_squared_per_image_gradient():
    torch.manual_seed(0)
    model = MultiHeadModel.of(load_backbone("resnet18", "none"))
    model.add_head(3)
    images = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    labels = torch.tensor([0, 2, 1, 1, 0])
    fisher = diagonal_fisher(model, model.backbone_named_parameters(), runtime_for(torch.device("cpu")), IMAGENET,
                             images, labels)
    assert not any(f.requires_grad for f in fisher.values())  # a constant in the penalty, never a graph
    assert set(fisher) == {n for n, _ in model.named_parameters()} - {"heads.0.weight", "heads.0.bias"}
    expected = {name: torch.zeros_like(f) for name, f in fisher.items()}
    params = dict(model.named_parameters())
    for image, label in zip(IMAGENET(images), labels):  # one image at a time, with autograd
        model.zero_grad()
        F.log_softmax(model(image[None]), dim=1)[0, label].backward()
        for name in expected:
            expected[name] += params[name].grad ** 2 / len(labels)
    for name in fisher:
        torch.testing.assert_close(fisher[name], expected[name], rtol=1e-4, atol=1e-10)


def test_ewc_accumulates_fisher_online(monkeypatch):
    # diagonal_fisher, the only user of the run, is replaced
    ewc = EWC(SimpleNamespace(runtime=None, normalisation=None, options={"ewc_lambda": 10.0, "ewc_gamma": 0.5},
                              shared_bn="drift"))
    weight = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    model = SimpleNamespace(named_parameters=lambda: [("layer.w", weight)],
                            backbone_named_parameters=lambda: [("layer.w", weight)])
    task_fisher = iter([{"layer.w": torch.tensor([4.0, 2.0])}, {"layer.w": torch.tensor([1.0, 3.0])}])
    monkeypatch.setattr(continual.ewc, "diagonal_fisher", lambda *_: next(task_fisher))
    data = SimpleNamespace(tensors=SimpleNamespace(train_images=None, train_labels=None))
    ewc.after_task(model, data)
    assert torch.equal(ewc.importance["layer.w"], torch.tensor([4.0, 2.0]))
    ewc.after_task(model, data)
    assert torch.equal(ewc.importance["layer.w"], torch.tensor([0.5 * 4 + 1, 0.5 * 2 + 3]))
    assert torch.equal(ewc.anchor["layer.w"], weight.detach())
    with torch.no_grad():
        weight += 1
    assert torch.equal(ewc.penalty(model), (ewc.importance["layer.w"] * 1).sum())


def test_er_memory_selection_is_seeded_and_per_task():
    first = select_for_memory(20, 5, seed=3)
    assert torch.equal(first, select_for_memory(20, 5, seed=3))
    assert len(set(first.tolist())) == 5 and all(0 <= i < 20 for i in first.tolist())
    assert not torch.equal(first, select_for_memory(20, 5, seed=4))
    assert torch.equal(select_for_memory(3, 5, seed=3), torch.arange(3))
    er = ER(SimpleNamespace(image_size=2, recipe=Recipe(seed=7), options={"er_per_task": 2, "er_batch_size": 32},
                            shared_bn="drift"))
    for position in range(2):
        images = torch.arange(4 * 12, dtype=torch.uint8).reshape(4, 3, 2, 2) + position
        tensors = SimpleNamespace(train_images=images, train_labels=torch.tensor([0, 1, 2, 3]))
        er.after_task(None, SimpleNamespace(labels=tensors.train_labels, tensors=tensors,
                                            sample=SimpleNamespace(task=SimpleNamespace(order=position)),
                                            position=position))
    kept = [select_for_memory(4, 2, seed=7 + position) for position in range(2)]
    assert torch.equal(er.labels, torch.cat(kept)) and er.tasks.tolist() == [0, 0, 1, 1]
    assert torch.equal(er.images[2:], torch.arange(4 * 12, dtype=torch.uint8).reshape(4, 3, 2, 2)[kept[1]] + 1)
