"""--tune: each shared-backbone method's hyper-parameters chosen by a stated protocol, on data the report never
scores, before the run learns its tasks with them (docs/baselines.md#tuning).

The protocol is A-GEM's (Chaudhry et al., ICLR 2019): hyper-parameters are chosen on a few tasks set aside for it, then
fixed for the whole run. The tuning tasks are the run's first few. Each configuration learns them in order, as the
method would, on their training images less a held-out tenth of each class (drawn with the seed), and is scored by
A-GEM's average accuracy: the mean held-out accuracy over the tuning tasks after the last one. Inside a trial the
held-out tenth plays the validation split's part (best epoch, patience), so no validation image is read while tuning.
The search goes one coordinate at a time in the order of De Lange et al.'s continual hyper-parameter framework
(TPAMI 2021), plasticity before stability: the learning rate first, the method's own option at its default, then that
option at the chosen rate. Its cost is the sum of the grids' sizes, not their product."""
import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass

import torch

from common.errors import RunError
from common.files import atomic_write_text, write_csv
from dataset.task import TaskSample
from network import method_spec
from network.methods import TUNED_LR
from training import distributed
from training.context import Context
from training.saved import read_saved, require_same_settings
from training.sequence import learn_sequence, sequence_config
from training.work import WorkUnit, do_units, task_cost

log = logging.getLogger("clr")

HELD_OUT = 0.1  # of each class's training images, per tuning task
DEFAULT_TUNING_TASKS = 3  # A-GEM's: the first three tasks

Values = dict[str, float]  # "lr" and the method's searched options


def held_out_sample(sample: TaskSample, seed: int) -> TaskSample:
    """The task as a trial learns it: its training images less a held-out tenth of each class (at least one image of
    a class with two or more), drawn with ``seed``, and that tenth in the validation split's place. The task's own
    validation images are not in it."""
    generator = torch.Generator().manual_seed(seed)
    by_class: dict[int, list[int]] = {}
    for index, (_, label) in enumerate(sample.train):
        by_class.setdefault(label, []).append(index)
    held: set[int] = set()
    for label in sorted(by_class):
        indices = by_class[label]
        count = max(1, round(len(indices) * HELD_OUT)) if len(indices) > 1 else 0
        held.update(indices[i] for i in torch.randperm(len(indices), generator=generator)[:count].tolist())
    return dataclasses.replace(sample, train=tuple(item for i, item in enumerate(sample.train) if i not in held),
                               val=tuple(item for i, item in enumerate(sample.train) if i in held))


def trial_name(values: Values) -> str:
    """A configuration's folder name: ``lr=0.0001,ewc_lambda=100``."""
    return ",".join(f"{name}={value:g}" for name, value in values.items())


@dataclass(frozen=True)
class Search:
    """One method's tuning for one seed: the configurations of each stage, their scores, and the choice."""

    ctx: Context  # the method's context in the run, with its defaults
    samples: list[TaskSample]  # the tuning tasks, each with its held-out tenth as its validation split

    @classmethod
    def of(cls, ctx: Context, samples: list[TaskSample]) -> "Search":
        return cls(ctx, [held_out_sample(sample, ctx.recipe.task_seed(sample.task.order)) for sample in samples])

    @property
    def space(self) -> dict[str, tuple[float, ...]]:
        return method_spec(self.ctx.method).search

    @property
    def defaults(self) -> Values:
        """What an untuned run uses: the recipe's rate and the method's options as given or by default."""
        return {name: self.ctx.recipe.lr if name == TUNED_LR else self.ctx.options[name] for name in self.space}

    def stage_trials(self, stage: int) -> list[Values]:
        """The configurations of ``stage``: the coordinate it searches over its grid, the earlier ones at their
        choice, the later ones at their default. A configuration tried before (the previous choice) is not new."""
        name = list(self.space)[stage]
        base = self.defaults | self.choice(stage)
        return [base | {name: value} for value in self.space[name]]

    def choice(self, stages: int | None = None) -> Values:
        """The values chosen by the first ``stages`` stages (all of them: the run's), from the trials' scores. The
        best score wins; a tie goes to the untuned value, then to the first in the grid."""
        chosen: Values = {}
        for stage, name in enumerate(list(self.space)[:stages]):
            trials = self.stage_trials(stage)
            best = max(trials, key=lambda values: (self.score(values)["score"],
                                                   values[name] == self.defaults[name]))
            chosen[name] = best[name]
        return chosen

    def trial_context(self, values: Values) -> Context:
        layout = self.ctx.layout.tuning_trial(self.ctx.method, trial_name(values))
        return with_values(self.ctx, values, layout=layout)

    def score(self, values: Values) -> dict:
        """A finished trial's score file: its held-out accuracies and their mean; refused if made with other
        settings or data."""
        ctx = self.trial_context(values)
        path = ctx.layout.trial_score
        if not path.exists():
            raise RunError(f"{path} is missing: the trial {trial_name(values)} of {ctx.method}'s tuning has not "
                           "finished (rerun the command to finish it)")
        saved = json.loads(path.read_text())
        require_same_settings(path, saved["config"], sequence_config(ctx, self.samples), "resume")
        return saved

    def units(self, stage: int) -> list[WorkUnit]:
        """The stage's configurations, one unit of work each (the same list in every process of a job: a unit whose
        trial is scored already does nothing)."""
        cost = sum(task_cost(len(s.train), len(s.val), self.ctx.recipe.epochs) for s in self.samples)
        return [WorkUnit(f"{self.ctx.method} seed {self.ctx.recipe.seed} tuning {trial_name(values)}", cost,
                         lambda values=values: self.run_trial(values, stage))
                for values in self.stage_trials(stage)]

    def run_trial(self, values: Values, stage: int) -> None:
        """Learn the tuning tasks with ``values`` (resuming a killed trial), write its score, then drop its
        weights: the trial's backbone is not needed once it is scored. A trial scored before is not run again."""
        ctx = self.trial_context(values)
        if ctx.layout.trial_score.exists():
            return
        log.info("tuning %s, seed %d, stage %d of %d (%s): %s", ctx.method, ctx.recipe.seed, stage + 1,
                 len(self.space), list(self.space)[stage], trial_name(values))
        for folder in (ctx.layout.result, ctx.layout.weight):
            folder.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        learn_sequence(ctx, self.samples, method_spec(ctx.method).implementation(ctx))
        correct = read_saved(ctx.layout.after_task(ctx.method))["correct"][-1]
        accuracies = [count / len(sample.val) for count, sample in zip(correct, self.samples)]
        score = {"config": sequence_config(ctx, self.samples), "values": values, "accuracies": accuracies,
                 "score": sum(accuracies) / len(accuracies), "seconds": time.perf_counter() - started}
        atomic_write_text(ctx.layout.trial_score, json.dumps(score, indent=1) + "\n")
        shutil.rmtree(ctx.layout.weight)
        log.info("tuning %s, seed %d: %s scored %.2f%% on the held-out images", ctx.method, ctx.recipe.seed,
                 trial_name(values), 100 * score["score"])

    def tried(self) -> list[Values]:
        """Every configuration tried, each once, in the order tried."""
        every = {trial_name(values): values for stage in range(len(self.space)) for values in self.stage_trials(stage)}
        return list(every.values())

    def write_table(self) -> None:
        """<method>.csv under the tuning folder: every configuration, its held-out accuracy per tuning task, its
        score and time, and which one the run uses."""
        chosen = self.defaults | self.choice()
        names = [sample.task.name for sample in self.samples]
        rows = []
        for values in self.tried():
            score = self.score(values)
            rows.append([*(f"{values[name]:g}" for name in self.space), *(f"{a:.4f}" for a in score["accuracies"]),
                         f"{score['score']:.4f}", f"{score['seconds']:.1f}", int(values == chosen)])
        write_csv(self.ctx.layout.tuning_table(self.ctx.method), [*self.space, *names, "score", "seconds", "chosen"],
                  rows)

    def tuned_context(self) -> Context:
        """The method's context for the run: the chosen values, and the tuning named in every file's settings."""
        chosen = self.defaults | self.choice()
        log.info("%s, seed %d: --tune chose %s (held-out score %.2f%%, %d configurations on %s)", self.ctx.method,
                 self.ctx.recipe.seed, trial_name(chosen), 100 * self.score(chosen)["score"], len(self.tried()),
                 ", ".join(sample.task.name for sample in self.samples))
        tuning = {"tasks": [sample.task.name for sample in self.samples], "held_out": HELD_OUT,
                  "configurations": len(self.tried())}
        return dataclasses.replace(with_values(self.ctx, chosen), tuning=tuning)


def with_values(ctx: Context, values: Values, layout=None) -> Context:
    """``ctx`` with the learning rate and options of ``values`` (and another layout, for a trial)."""
    recipe = dataclasses.replace(ctx.recipe, lr=values.get(TUNED_LR, ctx.recipe.lr))
    options = ctx.options | {name: value for name, value in values.items() if name != TUNED_LR}
    return dataclasses.replace(ctx, recipe=recipe, options=options, layout=layout or ctx.layout)


def tune(contexts: list[Context], samples: list[TaskSample], tasks: int) -> list[Context]:
    """Choose every shared-backbone context's values on the first ``tasks`` of ``samples``, stage by stage (under
    torchrun each stage's trials are units of work spread over the processes), and return the contexts the run
    learns with: those of the methods with a search space (the shared ones) tuned, the others as they were."""
    searches = {id(ctx): Search.of(ctx, samples[:tasks]) for ctx in contexts if method_spec(ctx.method).search}
    for stage in range(max((len(search.space) for search in searches.values()), default=0)):
        do_units([unit for search in searches.values() if stage < len(search.space)
                                 for unit in search.units(stage)])
    if distributed.is_leader():
        for search in searches.values():
            search.write_table()
    return [searches[id(ctx)].tuned_context() if id(ctx) in searches else ctx for ctx in contexts]


def forget_tuning(ctx: Context) -> None:
    """--fresh: every trial of the method's tuning and its table."""
    for folder in ctx.layout.tuning_folders(ctx.method):
        shutil.rmtree(folder, ignore_errors=True)
    ctx.layout.tuning_table(ctx.method).unlink(missing_ok=True)
