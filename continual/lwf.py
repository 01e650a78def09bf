"""LwF: learning without forgetting (Li & Hoiem, ECCV 2016 / TPAMI 2017). Before a task trains, the earlier
heads' outputs on the new task's training images are recorded with the backbone and heads as they are then; while
the task trains, the earlier heads' softened outputs (temperature T) are pulled toward those records, summed over the
earlier tasks, and the earlier heads train with the backbone (the paper's θo), as in the paper. Before that joint
training the paper's warm-up step trains the new head alone, the backbone and the earlier heads frozen."""
import torch
import torch.nn.functional as F

from common.cli import Option
from network import MultiHeadModel
from network.methods import LR_SEARCH, SHARED, TUNED_LR, MethodSpec, implements
from training.context import Context
from training.shared_method import Method, Phase, TaskData

SPEC = MethodSpec(
    "LwF", SHARED, "the whole backbone and the earlier heads with distillation to the earlier heads' recorded "
    "outputs, and a head", "Li & Hoiem, Learning without Forgetting, ECCV 2016", order=140, paper_column=5,
    options={
        "lwf_alpha": Option(1.0, "LwF: weight of the distillation loss, the sum over earlier tasks (the paper's "
                            "lambda_o; default %(default)s, as in the paper and Avalanche)"),
        "lwf_mean": Option(0, "LwF: 1 = the distillation loss is the mean over the earlier tasks, not the paper's sum "
                           "(this project's variant before 2026-12-04; default %(default)s)", high=1),
        "lwf_frozen_heads": Option(0, "LwF: 1 = the earlier tasks' heads stay frozen, where the paper trains them "
                                   "through the distillation (this project's variant before 2026-12-04; default "
                                   "%(default)s)", high=1),
        "lwf_warmup_epochs": Option(10, "LwF: epochs of the paper's warm-up step, in which the new head alone trains "
                                    "(backbone and earlier heads frozen) before the joint training; 0 = none, this "
                                    "project's variant before 2026-12-04 (default %(default)s; see "
                                    "docs/baselines.md)"),
        "lwf_temperature": Option(2.0, "LwF: softmax temperature of the distillation (default %(default)s, the "
                                  "paper's)", bounds="(]"),
    }, search={TUNED_LR: LR_SEARCH, "lwf_alpha": (0.5, 1.0, 2.0, 5.0, 10.0)})


@implements(SPEC)
class LwF(Method):
    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.recorded: list[torch.Tensor] = []  # per earlier task: its head's logits on every training image
        self.trained_before: tuple[dict[str, bool], bool] = ({}, False)  # before the warm-up: what trained, BN mode

    def trains_earlier_heads(self) -> bool:
        return not self.option("lwf_frozen_heads")

    def before_task(self, model: MultiHeadModel, data: TaskData) -> None:
        super().before_task(model, data)
        self.record(model, data)

    def phases(self, data: TaskData) -> list[Phase]:
        """The paper's warm-up step, then the joint training (the main phase). The warm-up trains the new head alone
        with cross-entropy; the first task has none, as it has no earlier head to keep."""
        if not (data.position and self.option("lwf_warmup_epochs")):
            return super().phases(data)
        warm_up = Phase("warm-up", epochs=self.option("lwf_warmup_epochs"), loss=super().batch_loss,
                        start=self.train_new_head_alone, end=self.train_as_before)
        return [warm_up, *super().phases(data)]

    def train_new_head_alone(self, model: MultiHeadModel, data: TaskData) -> None:
        """The warm-up's setting: the backbone (its BN statistics too, as θs is frozen) and the earlier heads
        frozen; what trained before is kept for ``train_as_before``."""
        self.trained_before = {name: p.requires_grad for name, p in model.named_parameters()}, model.statistics_frozen
        model.requires_grad_(False)
        model.heads[data.position].requires_grad_(True)
        model.statistics_frozen = True

    def train_as_before(self, model: MultiHeadModel, data: TaskData) -> None:
        """After the warm-up: the tensors and BN statistics train as the base ``before_task`` set them."""
        trains, model.statistics_frozen = self.trained_before
        for name, p in model.named_parameters():
            p.requires_grad_(trains[name])

    @torch.inference_mode()
    def record(self, model: MultiHeadModel, data: TaskData) -> None:
        """The earlier heads' logits on every training image of the task, with the model as it is now."""
        model.eval()
        runtime = self.ctx.runtime
        batches = self.ctx.batches(data.tensors.train_images, torch.arange(len(data.labels)), runtime.eval_batch_size,
                                   shuffle=False)
        outputs: list[list[torch.Tensor]] = [[] for _ in range(data.position)]
        for images, _ in batches:
            with runtime.autocast():
                features = model.pooled_features(runtime.model_input(images))
                for position, logits in enumerate(outputs):
                    logits.append(model.heads[position](features).float())
        self.recorded = [torch.cat(logits) for logits in outputs]

    def batch_loss(self, model, data, images, labels, index):
        runtime = self.ctx.runtime
        with runtime.autocast():
            features = model.pooled_features(runtime.model_input(images))
            logits = model.heads[model.current](features)
            earlier = [model.heads[position](features) for position in range(data.position)]
        loss = F.cross_entropy(logits.float(), labels)
        if earlier:
            temperature = self.option("lwf_temperature")
            distill = sum(soft_cross_entropy(out.float(), self.recorded[position][index], temperature)
                          for position, out in enumerate(earlier))
            if self.option("lwf_mean"):
                distill = distill / len(earlier)
            loss = loss + self.option("lwf_alpha") * distill
        return loss, logits


def soft_cross_entropy(logits: torch.Tensor, recorded: torch.Tensor, temperature: float) -> torch.Tensor:
    """The paper's modified cross-entropy: -sum softmax(recorded/T) * log softmax(logits/T), batch mean."""
    targets = F.softmax(recorded / temperature, dim=1)
    return -(targets * F.log_softmax(logits / temperature, dim=1)).sum(1).mean()
