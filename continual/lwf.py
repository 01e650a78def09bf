"""LwF: learning without forgetting (Li & Hoiem, ECCV 2016 / TPAMI 2017). Before a task trains, the earlier
heads' outputs on the new task's training images are recorded with the backbone as it is then; while the task
trains, the earlier heads' softened outputs (temperature T) are pulled toward those records."""
import torch
import torch.nn.functional as F

from continual.method import Method, TaskData
from network import MultiHeadModel
from training.context import Context


class LwF(Method):
    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.recorded: list[torch.Tensor] = []  # per earlier task: its head's logits on every training image

    def before_task(self, model: MultiHeadModel, data: TaskData) -> None:
        super().before_task(model, data)
        self.record(model, data)

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
                          for position, out in enumerate(earlier)) / len(earlier)
            loss = loss + self.option("lwf_alpha") * distill
        return loss, logits


def soft_cross_entropy(logits: torch.Tensor, recorded: torch.Tensor, temperature: float) -> torch.Tensor:
    """The paper's modified cross-entropy: -sum softmax(recorded/T) * log softmax(logits/T), batch mean."""
    targets = F.softmax(recorded / temperature, dim=1)
    return -(targets * F.log_softmax(logits / temperature, dim=1)).sum(1).mean()
