"""A shared-backbone method's training phases: the sequence driver runs them in order, each set up and undone by the
method's hooks, with its own recipe, loss, settings and files (named by the one rule: the main phase's are the
method's own, LwF's warm-up and PackNet's retraining are <method>.phase2), and --fresh finds every phase's files.
The fit loop is replaced here; the slow kill-and-resume tests in test_continual.py (LwF's warm-up) and
test_packnet.py (PackNet's retraining) train for real."""
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch

import training.sequence
from continual.lwf import LwF
from continual.packnet import PackNet
from network import MultiHeadModel, load_backbone, method_options
from training.sequence import learn_phases, numbered, other_phase_files, phase_files
from training.settings import Layout, Recipe
from training.shared_method import Method, Phase

TASK = SimpleNamespace(name="stripes")


@dataclass(frozen=True)
class PhaseContext:
    """What the driver reads of a run's context to run a phase (a frozen dataclass, as the run's is)."""

    method: str
    layout: Layout
    recipe: Recipe = Recipe(epochs=6, lr=1e-3)
    options: dict | None = None
    shared_bn: str = "drift"

    def task_config(self, sample) -> dict:
        return {"method": self.method, "epochs": self.recipe.epochs, "lr": self.recipe.lr}


def files_of(ctx: PhaseContext, phases: list[Phase]) -> list[tuple[str | None, str, str]]:
    named = [(phase.name, *phase_files(ctx, TASK, number)) for number, phase in numbered(phases)]
    return [(name, resume.name, str(metrics.relative_to(ctx.layout.result))) for name, resume, metrics in named]


@pytest.mark.parametrize(("method", "options", "position", "expected"), [
    (LwF, {"lwf_warmup_epochs": 3}, 1, [("warm-up", "stripes_LwF.phase2.resume.pt", "stripes/LwF.phase2.metrics.jsonl"),
                                        (None, "stripes_LwF.resume.pt", "stripes/LwF.metrics.jsonl")]),
    (LwF, {"lwf_warmup_epochs": 3}, 0, [(None, "stripes_LwF.resume.pt", "stripes/LwF.metrics.jsonl")]),
    (LwF, {"lwf_warmup_epochs": 0}, 1, [(None, "stripes_LwF.resume.pt", "stripes/LwF.metrics.jsonl")]),
    (PackNet, {"packnet_retrain_epochs": 2, "packnet_retrain_lr": 1e-4}, 0,
     [(None, "stripes_PackNet.resume.pt", "stripes/PackNet.metrics.jsonl"),
      ("retrain", "stripes_PackNet.phase2.resume.pt", "stripes/PackNet.phase2.metrics.jsonl")]),
    (PackNet, {"packnet_retrain_epochs": 0, "packnet_retrain_lr": 1e-4}, 0,
     [(None, "stripes_PackNet.resume.pt", "stripes/PackNet.metrics.jsonl")])])
def test_phases_and_their_file_names(tmp_path, method, options, position, expected):
    """LwF warms up before its main phase and PackNet retrains after it; either extra phase's files are
    <method>.phase2, as they were named before phases were declared."""
    ctx = PhaseContext(method.__name__, Layout(tmp_path / "result", tmp_path / "weight"), options=options)
    phases = method(ctx).phases(SimpleNamespace(position=position))
    assert files_of(ctx, phases) == expected
    if method is PackNet:
        assert phases[0].end is not None  # the prune ends the main phase, with a retraining or without one


def test_lwf_warms_up_for_the_papers_ten_epochs_by_default(tmp_path):
    """The paper's warm-up, the default; the slow tests shorten it to keep the suite small."""
    ctx = PhaseContext("LwF", Layout(tmp_path / "result", tmp_path / "weight"), options=method_options("LwF"))
    warm_up, joint = LwF(ctx).phases(SimpleNamespace(position=1))
    assert (warm_up.name, warm_up.epochs, joint.main) == ("warm-up", 10, True)


def test_the_phase_files_number_from_two_in_running_order(tmp_path):
    ctx = PhaseContext("Toy", Layout(tmp_path / "result", tmp_path / "weight"))
    assert [resume for _, resume, _ in files_of(ctx, [Phase("a"), Phase(), Phase("b"), Phase("c")])] \
        == ["stripes_Toy.phase2.resume.pt", "stripes_Toy.resume.pt", "stripes_Toy.phase3.resume.pt",
            "stripes_Toy.phase4.resume.pt"]


@pytest.mark.parametrize("phases", [[], [Phase("a")], [Phase(), Phase()], [Phase(epochs=3)], [Phase(lr=0.1)]])
def test_a_task_has_one_main_phase_with_the_run_recipe(phases):
    with pytest.raises(ValueError, match="one main phase"):
        numbered(phases)


def test_fresh_finds_the_files_of_every_later_phase(tmp_path):
    ctx = PhaseContext("LwF", Layout(tmp_path / "result", tmp_path / "weight"))
    (tmp_path / "weight").mkdir()
    (tmp_path / "result" / TASK.name).mkdir(parents=True)
    kept = [*phase_files(ctx, TASK, 1), ctx.layout.resume("stripes", "PackNet.phase2"),
            ctx.layout.metrics("blob", "LwF.phase2")]  # the main phase's (forget_tasks' own), other methods' and tasks'
    later = [phase_files(ctx, TASK, 2)[1], *phase_files(ctx, TASK, 3)]  # phase 2 finished: its metrics alone remain
    for path in kept + later:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    assert sorted(other_phase_files(ctx, TASK)) == sorted(later)
    assert other_phase_files(ctx, SimpleNamespace(name="shapes")) == []


class Toy(Method):
    """Three phases that log what the driver does with them."""

    def __init__(self, ctx, events: list) -> None:
        super().__init__(ctx)
        self.events = events

    def phases(self, data) -> list[Phase]:
        def hook(what: str):
            return lambda model, task_data: self.events.append((what, task_data.position))

        return [Phase("warm-up", epochs=2, loss=self.warm_up_loss, start=hook("start warm-up"),
                      end=hook("end warm-up")),
                Phase(start=hook("start main"), end=hook("end main")),
                Phase("polish", lr=1e-5, end=hook("end polish"))]

    def batch_loss(self, model, data, images, labels, index):
        return torch.tensor(1.0), images

    def warm_up_loss(self, model, data, images, labels, index):
        return torch.tensor(2.0), images


def test_the_driver_runs_each_phase_with_its_recipe_loss_settings_and_files(tmp_path, monkeypatch):
    events = []

    def fit(ctx, sample, model, train, val, config, batch_loss, *, resume, metrics, hooks):
        loss, _, labels = batch_loss(torch.zeros(2), torch.tensor([1, 0]))
        events.append(("fit", ctx.recipe.epochs, ctx.recipe.lr, config, float(loss), labels.tolist(), resume.name,
                       metrics.name))
        return SimpleNamespace(best_state=f"best of {metrics.name}")

    monkeypatch.setattr(training.sequence, "fit", fit)
    monkeypatch.setattr(training.sequence, "load_task_state", lambda model, state: events.append(("load", state)))
    ctx = PhaseContext("Toy", Layout(tmp_path / "result", tmp_path / "weight"))
    method = Toy(ctx, events)
    data = SimpleNamespace(position=1, sample=SimpleNamespace(task=TASK), labels=torch.tensor([5, 6]), train=None,
                           val=None)
    task_config = {"the task's": "settings"}
    progress = learn_phases(ctx, None, method, data, numbered(method.phases(data)), task_config)
    assert progress.best_state == "best of Toy.metrics.jsonl"  # the main phase's: the task's record
    assert events == [
        ("start warm-up", 1),
        ("fit", 2, 1e-3, {"method": "Toy", "epochs": 2, "lr": 1e-3, "phase": "warm-up"}, 2.0, [6, 5],
         "stripes_Toy.phase2.resume.pt", "Toy.phase2.metrics.jsonl"),
        ("load", "best of Toy.phase2.metrics.jsonl"), ("end warm-up", 1),
        ("start main", 1),
        ("fit", 6, 1e-3, task_config, 1.0, [6, 5], "stripes_Toy.resume.pt", "Toy.metrics.jsonl"),
        ("load", "best of Toy.metrics.jsonl"), ("end main", 1),
        ("fit", 6, 1e-5, {"method": "Toy", "epochs": 6, "lr": 1e-5, "phase": "polish"}, 1.0, [6, 5],
         "stripes_Toy.phase3.resume.pt", "Toy.phase3.metrics.jsonl"),
        ("load", "best of Toy.phase3.metrics.jsonl"), ("end polish", 1)]


def test_lwf_warm_up_trains_the_new_head_alone_and_then_everything_as_before():
    ctx = SimpleNamespace(backbone=load_backbone("resnet18", "none"), shared_bn="freeze",
                          options={"lwf_warmup_epochs": 1, "lwf_frozen_heads": 1})
    lwf = LwF(ctx)
    model: MultiHeadModel = lwf.build_model()
    model.add_head(3)
    model.add_head(4)
    data = SimpleNamespace(position=1)
    Method.before_task(lwf, model, data)  # what trains outside the warm-up: the backbone and the new head
    before = {name: p.requires_grad for name, p in model.named_parameters()}
    assert model.statistics_frozen and not before["heads.0.weight"] and before["heads.1.weight"]
    warm_up, _ = lwf.phases(data)
    warm_up.start(model, data)
    assert [name for name, p in model.named_parameters() if p.requires_grad] == ["heads.1.weight", "heads.1.bias"]
    assert model.statistics_frozen
    warm_up.end(model, data)
    assert {name: p.requires_grad for name, p in model.named_parameters()} == before and model.statistics_frozen
    lwf.ctx.shared_bn = "drift"  # BN statistics that train in the joint training are frozen in the warm-up only
    Method.before_task(lwf, model, data)
    warm_up.start(model, data)
    assert model.statistics_frozen
    warm_up.end(model, data)
    assert not model.statistics_frozen
