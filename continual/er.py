"""ER: experience replay with a tiny episodic memory (Chaudhry et al., "On Tiny Episodic Memories in Continual
Learning", 2019). After each task a fixed number of its training images, chosen with a seeded draw, is kept as
uint8 (the cache's format) with its label and task; every training step adds a batch drawn from that memory,
each image scored by its own task's head (which it trains, as in the paper), to the current batch."""
import torch
import torch.nn.functional as F

from common.cli import Option
from network import MultiHeadModel, state_bytes
from network.methods import LR_SEARCH, SHARED, TUNED_LR, MethodSpec, implements
from training.context import Context
from training.shared_method import Method, TaskData

SPEC = MethodSpec(
    "ER", SHARED, "the whole backbone and the earlier heads with replayed images of the earlier tasks, and a head",
    "Chaudhry et al., On Tiny Episodic Memories in Continual Learning, 2019", order=150, paper_column=6,
    options={
        "er_per_task": Option(50, "ER: training images kept per learnt task (default %(default)s)"),
        "er_batch_size": Option(32, "ER: replayed images added to each training batch (default %(default)s, the "
                                "training batch size, as in Chaudhry et al. and Mammoth)"),
        "er_frozen_heads": Option(0, "ER: 1 = the earlier tasks' heads stay frozen, where the paper's replayed images "
                                  "train their own task's head (this project's variant before 2026-12-04; default "
                                  "%(default)s)", high=1),
    }, search={TUNED_LR: LR_SEARCH})


@implements(SPEC)
class ER(Method):
    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.images = torch.empty(0, 3, ctx.image_size, ctx.image_size, dtype=torch.uint8)
        self.labels = torch.empty(0, dtype=torch.long)
        self.tasks = torch.empty(0, dtype=torch.long)  # the position (head) of each stored image's task

    def batch_loss(self, model, data, images, labels, index):
        if not len(self.labels):
            return super().batch_loss(model, data, images, labels, index)
        runtime = self.ctx.runtime
        drawn = torch.randperm(len(self.labels))[:self.option("er_batch_size")]  # global RNG: saved on resume
        replay = self.ctx.normalisation(self.images[drawn].to(runtime.device))
        replay_labels, replay_tasks = self.labels[drawn].to(runtime.device), self.tasks[drawn]
        with runtime.autocast():
            features = model.pooled_features(runtime.model_input(torch.cat([images, replay])))
            logits = model.heads[model.current](features[:len(labels)])
            losses = [F.cross_entropy(logits.float(), labels, reduction="sum")]
            for position in replay_tasks.unique().tolist():
                mine = (replay_tasks == position).to(runtime.device)
                replayed = model.heads[position](features[len(labels):][mine])
                losses.append(F.cross_entropy(replayed.float(), replay_labels[mine], reduction="sum"))
        return sum(losses) / (len(labels) + len(drawn)), logits

    def trains_earlier_heads(self) -> bool:
        return not self.option("er_frozen_heads")

    def after_task(self, model: MultiHeadModel, data: TaskData) -> None:
        kept = select_for_memory(len(data.labels), self.option("er_per_task"),
                                 self.ctx.recipe.task_seed(data.sample.task.order))
        self.images = torch.cat([self.images, data.tensors.train_images[kept]])
        self.labels = torch.cat([self.labels, data.tensors.train_labels[kept]])
        self.tasks = torch.cat([self.tasks, torch.full((len(kept),), data.position, dtype=torch.long)])
        super().after_task(model, data)

    def task_bytes(self, position: int) -> int:
        mine = self.tasks == position
        return state_bytes({"images": self.images[mine], "labels": self.labels[mine], "tasks": self.tasks[mine]})

    def state_dict(self) -> dict:
        return super().state_dict() | {"images": self.images, "labels": self.labels, "tasks": self.tasks}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.images, self.labels, self.tasks = state["images"], state["labels"], state["tasks"]


def select_for_memory(num_images: int, count: int, seed: int) -> torch.Tensor:
    """Indices of the ``count`` images a task leaves in the memory (all of them if it has fewer): a
    uniform draw without replacement from its own seeded generator, so a rerun keeps the same images."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(num_images, generator=generator)[:count].sort().values
