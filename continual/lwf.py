"""LwF: learning without forgetting (Li & Hoiem, ECCV 2016 / TPAMI 2017). Before a task trains, the earlier
heads' outputs on the new task's training images are recorded with the backbone as it is then; while the task
trains, the earlier heads' softened outputs (temperature T) are pulled toward those records."""
import torch
import torch.nn.functional as F

from continual.learner import Learner, TaskData
from continual.method import Method
from dataset.loader import DeviceBatches


class LwF(Method):
    OPTIONS = {
        "lwf_alpha": (1.0, "LwF: weight of the distillation loss, the mean over earlier tasks (the paper's "
                      "lambda_o; default %(default)s, as in the paper and Avalanche)"),
        "lwf_temperature": (2.0, "LwF: softmax temperature of the distillation (default %(default)s, the paper's)"),
    }

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.recorded: list[torch.Tensor] = []  # per earlier task: its head's logits on every training image

    @torch.inference_mode()
    def before_task(self, learner: Learner, data: TaskData) -> None:
        learner.model.eval()
        batches = DeviceBatches(data.tensors.train_images, torch.arange(len(data.labels)), self.ctx.eval_batch_size,
                                self.ctx.device, shuffle=False)
        outputs: list[list[torch.Tensor]] = [[] for _ in range(data.position)]
        for images, _ in batches:
            with self.ctx.autocast():
                features = learner.features(images)
                for position, logits in enumerate(outputs):
                    logits.append(learner.heads[position](features).float())
        self.recorded = [torch.cat(logits) for logits in outputs]

    def batch_loss(self, learner, data, images, labels, index):
        with self.ctx.autocast():
            features = learner.features(images)
            logits = learner.model.fc(features)
            earlier = [learner.heads[position](features) for position in range(data.position)]
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
