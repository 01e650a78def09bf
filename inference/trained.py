"""A trained task ready to use: its weights file checked against the current settings, its model, its outputs."""
import torch
from tqdm import tqdm

from dataset.loader import DeviceBatches
from dataset.task import TaskInfo, TaskSample
from network import load_task_state
from network.clr import TaskModel
from training.checkpoints import load_checkpoint, run_config
from training.context import Context, RunError
from training.loop import build_task_model

# the settings that change what a saved task computes, and the option that sets each
SETTING_OPTIONS = {"method": "--method", "arch": "--arch", "backbone": "--weights", "image_size": "--image-size"}


def differing_settings(ctx: Context, config: dict) -> list[str]:
    """The settings a saved task was trained with that this command sets otherwise, as "--option saved (now x)"."""
    current = {"method": ctx.args.method, "arch": ctx.args.arch, "backbone": ctx.backbone_id,
               "image_size": ctx.args.image_size}
    return [f"{option} {config.get(key)} (now {current[key]})"
            for key, option in SETTING_OPTIONS.items() if config.get(key) != current[key]]


def load_trained(ctx: Context, task: TaskInfo) -> dict:
    """The task's weights file for this method, refused when it was trained with other settings."""
    path = ctx.weight_path(task)
    if not path.exists():
        raise RunError(f"task {task.name} has no weights for --method {ctx.args.method} in {ctx.args.weight} "
                       "(train it first, or pass the --weight folder and --method it was trained with)")
    saved = load_checkpoint(path)
    differing = differing_settings(ctx, saved["config"])
    if differing:
        raise RunError(f"{path} was trained with {', '.join(differing)}: pass the same setting to use it")
    return saved


def usable_weights(ctx: Context, sample: TaskSample) -> dict | None:
    """The task's weights file if it was trained with this command's settings on the same images, else None.
    The recipe (epochs, lr, ...) may differ: it changed how the state was learnt, not what it computes."""
    path = ctx.weight_path(sample.task)
    if not path.exists():
        return None
    saved = load_checkpoint(path)
    same_data = saved["config"].get("manifest_sha256") == run_config(ctx, sample)["manifest_sha256"]
    return saved if same_data and not differing_settings(ctx, saved["config"]) else None


def task_model(ctx: Context, saved: dict) -> TaskModel:
    """The task's model: a fresh copy of the backbone with the saved task state loaded."""
    model = build_task_model(ctx, saved["config"]["num_classes"])
    load_task_state(model, saved["state"])
    return model


@torch.inference_mode()
def batch_outputs(model: torch.nn.Module, images: torch.Tensor, ctx: Context, desc: str) -> torch.Tensor:
    """``model`` applied to uint8 images exactly as training's ``evaluate`` serves them (the same batches,
    on-device normalisation, eval mode and deterministic cuDNN), so a task's validation images give the
    logits its recorded accuracy came from. Float32 on the CPU, one row per image."""
    model.eval()
    batches = DeviceBatches(images, torch.zeros(len(images), dtype=torch.int64), ctx.eval_batch_size, ctx.device,
                            shuffle=False)
    outputs = []
    with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True):
        for batch, _ in tqdm(batches, desc=desc, leave=False, unit="batch"):
            with ctx.autocast():
                outputs.append(model(ctx.model_input(batch)).float().cpu())
    return torch.cat(outputs)
