"""A run's explicit settings, built once by main.py from the command line: how each task is trained (Recipe),
where and how the arithmetic runs (Runtime), and where every file goes (Layout)."""
import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from common.errors import RunError
from network import LayerPolicy

PRECISIONS = ("auto", "bf16", "fp32")  # auto: bf16 autocast on CUDA, fp32 on the CPU
RELEASE_EVAL_BATCH = 16  # the release's evaluation batch, kept on the CPU
CUDA_EVAL_BATCH = 256


@dataclass(frozen=True)
class Recipe:
    """How each task is trained; the defaults are the release's recipe (docs/release.md §2)."""

    epochs: int = 60
    batch_size: int = 32
    lr: float = 1e-3  # Adam
    norm_penalty: float = 1e-5  # weight of the sum of the task tensors' L2 norms in the loss
    patience: int = 21  # stop when the epoch is more than this many epochs past the best
    seed: int = 0  # task k seeds its head and shuffling with seed + k

    def task_seed(self, order: int) -> int:
        """The seed of the task at 0-based place ``order`` in the run: its head, its layers' default init and its
        shuffling draw from it, so a task trains alike whichever process or resumed run learns it."""
        return self.seed + order

    @property
    def lr_step(self) -> int:
        """StepLR's step: the release's epochs // 3, at least 1 so that short runs still work."""
        return max(1, self.epochs // 3)


@dataclass(frozen=True)
class MethodSettings:
    """One method of a run: the backbone it trains on (the arch and weights it implies or was given) and its own
    options, checked against the registry."""

    method: str
    arch: str
    weights: str
    options: dict[str, int | float]
    policy: LayerPolicy | None  # an isolated method's norm policy and CLR placement (None: a shared backbone)
    shared_bn: str | None = None  # what a shared backbone's BN does (network.methods.SHARED_BN); None: isolated


@dataclass(frozen=True)
class Runtime:
    """Where and how the arithmetic runs. It changes speed and floating-point rounding, never the recipe."""

    device: torch.device
    bf16: bool  # bf16 autocast (CUDA, or the CPU's own autocast) instead of fp32
    channels_last: bool  # the memory format cuDNN is fastest with
    fused_optimizer: bool  # Adam's fused kernel
    eval_batch_size: int
    compile: bool = False  # torch.compile the training step

    @property
    def on_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def pin_memory(self) -> bool:
        """Host buffers the device copies from without a sync: worth it only for a GPU."""
        return self.on_cuda

    @property
    def precision(self) -> str:
        return "bf16 autocast" if self.bf16 else "fp32"

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def model_input(self, images: torch.Tensor) -> torch.Tensor:
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """A freshly built model on this runtime's device and memory format."""
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model


def runtime_for(device: torch.device, precision: str = "auto", eval_batch_size: int | None = None,
                compile: bool = False) -> Runtime:
    """The runtime a device gets: on CUDA bf16 autocast (unless fp32 is asked for), channels_last, fused Adam and
    evaluation in batches of 256; on the CPU fp32 (unless bf16 is asked for) and the release's batches of 16."""
    if precision not in PRECISIONS:
        raise RunError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    cuda = device.type == "cuda"
    return Runtime(device, bf16=precision == "bf16" or (precision == "auto" and cuda), channels_last=cuda,
                   fused_optimizer=cuda,
                   eval_batch_size=eval_batch_size or (CUDA_EVAL_BATCH if cuda else RELEASE_EVAL_BATCH),
                   compile=compile)


def resolve_device(choice: str) -> torch.device:
    """``auto`` is CUDA where torch sees a GPU; ``cuda`` without one is refused."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise RunError("--device cuda was asked for, but torch sees no CUDA device")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


SEED_FOLDER = "seed_"  # each seed's folders, under --result and --weight, of a run over several seeds
TUNING_FOLDER = "tuning"  # --tune's trials, under each seed's --result and --weight


@dataclass(frozen=True)
class Layout:
    """Every file a run reads or writes under --result and --weight, named here and nowhere else."""

    result: Path
    weight: Path

    def for_seed(self, seed: int) -> "Layout":
        """The folders of one seed of a run with several (--seeds): seed_<S>/ under --result and --weight, each a
        complete result and weight folder of its own."""
        return Layout(result=self.result / f"{SEED_FOLDER}{seed}", weight=self.weight / f"{SEED_FOLDER}{seed}")

    def seeds_found(self) -> list[int]:
        """The seeds whose seed_<S>/ result folders are here (a run over several seeds wrote them)."""
        return sorted(int(path.name.removeprefix(SEED_FOLDER)) for path in self.result.glob(f"{SEED_FOLDER}*")
                      if path.is_dir() and path.name.removeprefix(SEED_FOLDER).isdigit())

    def seeds(self, seeds: list[int]) -> dict[int, "Layout"]:
        """Each seed's layout: this one for a single seed (a plain run's files, where they always were), seed_<S>/
        folders for several."""
        return {seeds[0]: self} if len(seeds) == 1 else {seed: self.for_seed(seed) for seed in seeds}

    # --weight: the record of each finished task, resume points, the sequence's state, anchors, the run lock
    def weights(self, task_name: str, method: str) -> Path:
        return self.weight / f"{task_name}_{method}.pt"

    def resume(self, task_name: str, method: str) -> Path:
        return self.weight / f"{task_name}_{method}.resume.pt"

    def after_task(self, method: str) -> Path:
        """A shared-backbone method's state after its last finished task."""
        return self.weight / f"{method}_after_task.pt"

    def anchor(self, task_name: str) -> Path:
        """The task mapper's anchor: one per task, whatever the method."""
        return self.weight / "anchors" / f"{task_name}.pt"

    @property
    def lock(self) -> Path:
        return self.weight / ".clr-run.lock"

    # --result: logs, per-epoch metrics, manifests, the per-method CSVs, the report
    def task_log(self, task_name: str, method: str) -> Path:
        return self.result / task_name / f"{method}.log"

    def metrics(self, task_name: str, method: str) -> Path:
        """The task's per-epoch metrics, one JSON object per line (see training.metrics)."""
        return self.result / task_name / f"{method}.metrics.jsonl"

    def manifest(self, task_name: str) -> Path:
        return self.result / task_name / "manifest.csv"

    def results_csv(self, method: str) -> Path:
        """<method>.csv: task_id,task_name,best_acc, as the release writes it."""
        return self.result / f"{method}.csv"

    def matrix_csv(self, method: str) -> Path:
        return self.result / f"{method}_matrix.csv"

    def task_agnostic_csv(self, method: str) -> Path:
        return self.result / f"task_agnostic_{method}.csv"

    @property
    def report(self) -> Path:
        return self.result / "report.md"

    @property
    def results_wide(self) -> Path:
        return self.result / "results_wide.csv"

    @property
    def verification(self) -> Path:
        """What the report's re-evaluation found per method, as JSON, for programs (report.md says it in words)."""
        return self.result / "verification.json"

    @property
    def figures(self) -> Path:
        return self.result / "figures"

    # --tune: each configuration tried is a short run of its own, in folders of its own
    def tuning_trial(self, method: str, trial: str) -> "Layout":
        """The result and weight folders of one configuration that --tune tries (``trial`` names its values)."""
        return Layout(result=self.result / TUNING_FOLDER / method / trial,
                      weight=self.weight / TUNING_FOLDER / method / trial)

    def tuning_folders(self, method: str) -> tuple[Path, Path]:
        """Every trial of the method's tuning, under --result and --weight (what --fresh forgets)."""
        return self.result / TUNING_FOLDER / method, self.weight / TUNING_FOLDER / method

    def tuning_table(self, method: str) -> Path:
        """Every configuration --tune tried for the method, its scores and the one chosen."""
        return self.result / TUNING_FOLDER / f"{method}.csv"

    @property
    def trial_score(self) -> Path:
        """A finished trial's score (in the trial's own result folder), written once the trial is done."""
        return self.result / "score.json"

    # the top --result folder of a run over several seeds (each seed's own files lie in a folder of its own)
    @property
    def seeds_report(self) -> Path:
        """The report across seeds: the top folder's report.md, beside the seeds' folders with their own."""
        return self.report

    @property
    def seeds_summary_csv(self) -> Path:
        """One row per method: its average accuracy and BWT over seeds, with their intervals."""
        return self.result / "seeds_summary.csv"

    @property
    def seeds_differences_csv(self) -> Path:
        """CLR's average minus each other method's, paired by seed, with its interval."""
        return self.result / "seeds_differences.csv"

    @property
    def paper_table_csv(self) -> Path:
        """The paper-style table across seeds: <method>_mean and <method>_sd per task."""
        return self.result / "paper_table.csv"

    @property
    def paper_table_md(self) -> Path:
        return self.result / "paper_table.md"

    def method_of_csv(self, path: Path) -> str | None:
        """The method whose <method>.csv ``path`` is, or None for the other CSVs beside them."""
        name = path.name
        if (path.parent != self.result or path.suffix != ".csv"
                or path in (self.results_wide, self.seeds_summary_csv, self.seeds_differences_csv, self.paper_table_csv)
                or name.startswith("task_agnostic_") or name.endswith("_matrix.csv")):
            return None
        return path.stem


def prepare_output_folder(folder: Path, what: str) -> None:
    """Create ``folder`` and make sure this process can write there, before any work depends on it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        raise RunError(f"cannot write to the {what} folder {folder}: {error.strerror or error}") from None
