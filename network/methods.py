"""The one registry of methods: for every ``--method``, its family, its options and their ranges, the architecture
and weights it implies, its paper and citation, and (for the methods with a model per task) what it does to the
backbone's layers. main.py, ``--help``, docs/options.md and the report all read it."""
import enum
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from torch import nn

from common.cli import Option, option_flag
from common.errors import NetworkError
from network.backbone import DEFAULT_ARCH, DEFAULT_WEIGHTS
from network.layers import AdaptedConv, GatedConv, ReprogrammedConv
from network.masks import piggyback_conv, supsup_conv


# What a shared backbone does with its BatchNorm layers from task to task (--shared-bn): drift (they train, their
# statistics follow each task), freeze (from the second task on their running statistics stay as the first task left
# them, as FACIL's --fix-bn; the affine pair trains), per-task (each task keeps its own statistics and affine pair,
# starting from the backbone's, as PSP)
SHARED_BN = ("drift", "freeze", "per-task")
DRIFT, FREEZE, PER_TASK = SHARED_BN


class Family(enum.Enum):
    """How a method's tasks relate: the sequence driver that learns them follows from it."""

    ISOLATED = "a model per task"  # each task trains its own state on a fresh copy of the frozen backbone
    SHARED = "one backbone carried across tasks"  # each task trains the backbone that later tasks move on


Reprogram = Callable[[nn.Conv2d, dict], "nn.Module | None"]
"""What a frozen conv becomes for a task, given the method's options (None: the conv stays as it is)."""


NORM_POLICIES = ("train", "frozen", "affine")
"""What a task does with the backbone's norm layers. train: affine and running statistics the task's, BN in train
mode with batch statistics (the release's); frozen: the backbone's, BN in eval mode while training; affine: the
affine pair the task's and trained, the statistics the backbone's (BN in eval mode)."""
CLR_PLACEMENTS = ("every", "skip-depthwise")
"""Where CLR's kernels go among the spatial convs: after every one (the release's), or not after a depthwise conv,
which already filters each channel on its own."""


@dataclass(frozen=True)
class LayerPolicy:
    """A task's norm policy and CLR placement: they change what the task computes and stores, so a task records them
    and is rebuilt with them."""

    norm: str = "train"  # one of NORM_POLICIES
    clr_placement: str = "every"  # one of CLR_PLACEMENTS

    def as_config(self) -> dict[str, str]:
        """The keys a task's record holds them under."""
        return {"norm": self.norm, "clr_placement": self.clr_placement}

    @property
    def owns_norm_layers(self) -> bool:
        """The norm layers' affine pairs (or, without them, SupSup's statistics) are the task's."""
        return self.norm != "frozen"

    @property
    def trains_norm_statistics(self) -> bool:
        return self.norm == "train"

    def skips_kernel_after(self, conv: nn.Conv2d) -> bool:
        """Whether CLR puts no kernel after ``conv``: a depthwise conv (one spatial filter per channel) under
        skip-depthwise."""
        return self.clr_placement == "skip-depthwise" and is_depthwise(conv)


def is_depthwise(conv: nn.Conv2d) -> bool:
    """A depthwise conv: one spatial filter per channel (groups == in_channels == out_channels, kernel over 1x1)."""
    return conv.groups == conv.in_channels == conv.out_channels and conv.kernel_size != (1, 1)


@dataclass(frozen=True)
class TaskLayers:
    """What an isolated method does to the backbone, and which of its tensors a task owns."""

    reprogram: Reprogram | None = None  # None: every conv stays
    norm: str = "train"  # the method's own norm policy (NORM_POLICIES); Linear, li18 and li50 keep BN frozen
    trains_all: bool = False  # every weight is the task's: one full model per task
    affine_norm: bool = True  # False: norm layers lose their affine pair (SupSup); statistics stay the task's
    clr_kernels: bool = False  # its layers are CLR's kernels, placed as --clr-placement says

    @property
    def chooses_norm(self) -> bool:
        """--norm applies: the task trains its norm layers but not every weight, and they have an affine pair (a
        full model trains everything; Linear, li18 and li50 keep BN frozen; SupSup's BN has no affine pair)."""
        return self.norm == "train" and not self.trains_all and self.affine_norm

    def policy(self, norm: str | None = None, clr_placement: str | None = None) -> LayerPolicy:
        """The policy a task of this method uses: ``norm`` and ``clr_placement`` where they apply (None: the
        default), else the method's own."""
        return LayerPolicy(norm if norm is not None and self.chooses_norm else self.norm,
                           clr_placement if clr_placement is not None and self.clr_kernels else "every")


@dataclass(frozen=True)
class MethodSpec:
    """One ``--method``."""

    name: str
    family: Family
    learns: str  # what each task learns, in a phrase (--help, the docs)
    citation: str  # where the method comes from
    paper_name: str | None = None  # the paper's column name, where it differs from ``name`` (CLR, CLR-Full)
    options: dict[str, Option] = field(default_factory=dict)  # "<method>_<name>", offered as --<method>-<name>
    arch: str | None = None  # the one architecture the method is defined on (li18, li50)
    weights: str | None = None  # the one kind of backbone weights it is defined on (a random init)
    layers: TaskLayers | None = None  # the isolated family's layers (None for a shared backbone)
    # what --tune tries (a shared backbone only), one coordinate after another in this order: "lr" (the recipe's Adam
    # rate) first, then the method's own stability option; see continual.tuning
    search: dict[str, tuple[float, ...]] = field(default_factory=dict)
    fixed_bn: str | None = None  # the --shared-bn value a shared method's definition fixes (PSP, PackNet: per-task)

    def __post_init__(self) -> None:
        if self.fixed_bn is not None and (self.family is Family.ISOLATED or self.fixed_bn not in SHARED_BN):
            raise ValueError(f"{self.name}: only a shared method fixes a --shared-bn value, one of {SHARED_BN}")
        if (self.layers is not None) != (self.family is Family.ISOLATED):
            raise ValueError(f"{self.name}: an isolated method says what it does to the layers, a shared one not")
        if (self.family is Family.SHARED) != (next(iter(self.search), None) == TUNED_LR):
            raise ValueError(f"{self.name}: a shared-backbone method's search starts with the learning rate, an "
                             "isolated one has none (it keeps the release's recipe)")
        if any(name != TUNED_LR and name not in self.options for name in self.search):
            raise ValueError(f"{self.name}: --tune searches the learning rate and the method's own options only")
        prefix = self.name.lower() + "_"
        if any(not name.startswith(prefix) for name in self.options):
            raise ValueError(f"{self.name}: every option is named {prefix}<name>")

    @property
    def display_name(self) -> str:
        """The paper's name where it has one (CLR, CLR-Full), else the method's own."""
        return self.paper_name or self.name

    @property
    def label(self) -> str:
        """``CLR (Ghost_reduced_v1)`` for a method the paper renames, else the name alone."""
        return f"{self.paper_name} ({self.name})" if self.paper_name else self.name


def _clr(after_spatial: int | None, after_pointwise: int | None) -> Reprogram:
    """CLR's placement: a depthwise kernel of the first size after each conv with a spatial kernel (stem, 3x3, 5x5,
    7x7, depthwise included; --clr-placement skip-depthwise then leaves the depthwise convs out, see
    ``LayerPolicy.skips_kernel_after``), of the second size after each 1x1 conv; None: no CLR layer there."""
    def reprogram(conv: nn.Conv2d, options: dict) -> nn.Module | None:
        kernel_size = after_pointwise if conv.kernel_size == (1, 1) else after_spatial
        return None if kernel_size is None else ReprogrammedConv(conv, kernel_size)
    return reprogram


def _every_conv(layer: Callable[[nn.Conv2d], nn.Module]) -> Reprogram:
    return lambda conv, options: layer(conv)


def _piggyback(conv: nn.Conv2d, options: dict) -> nn.Module:
    return piggyback_conv(conv, threshold=options["piggyback_threshold"],
                          score_init=options["piggyback_score_init"], lr=options["piggyback_mask_lr"])


def _supsup(conv: nn.Conv2d, options: dict) -> nn.Module:
    return supsup_conv(conv, sparsity=options["supsup_sparsity"])


TUNED_LR = "lr"
# Adam rates for training a whole backbone: the recipe's 1e-3 was chosen for CLR's small per-task tensors; fine-tuning
# a pretrained network with Adam usually takes 1e-4 or less, so the grid spans a decade and a half below it
LR_SEARCH = (3e-5, 1e-4, 3e-4, 1e-3)

_CLR_PAPER = "Ge et al., CLR: Channel-wise Lightweight Reprogramming for Continual Learning, ICCV 2023"
_RELEASE = "the CLR authors' release (docs/release.md §1b)"
ISOLATED, SHARED = Family.ISOLATED, Family.SHARED

_SPECS = [
    MethodSpec("Ghost_reduced_v1", ISOLATED, "a depthwise 3x3 after the stem and every conv with a spatial kernel, "
               "every norm layer, a head", _CLR_PAPER, paper_name="CLR",
               layers=TaskLayers(_clr(3, None), clr_kernels=True)),
    MethodSpec("Ghost", ISOLATED, "a depthwise 3x3 after every conv, every norm layer, a head", _CLR_PAPER,
               paper_name="CLR-Full", layers=TaskLayers(_clr(3, 3), clr_kernels=True)),
    MethodSpec("Ghost_reduced_v2", ISOLATED, "CLR, plus one scale per channel after every 1x1 conv", _RELEASE,
               layers=TaskLayers(_clr(3, 1), clr_kernels=True)),
    MethodSpec("Linear", ISOLATED, "the head only (the backbone and its norm layers frozen)",
               "the linear probe of the CLR release", layers=TaskLayers(norm="frozen")),
    MethodSpec("Finetune", ISOLATED, "every weight: one full model per task", "fine-tuning, as in the CLR release",
               layers=TaskLayers(trains_all=True)),
    MethodSpec("Ghost_a", ISOLATED, "gated CLR after every conv: conv + gate x depthwise 3x3, every norm layer, a "
               "head", _RELEASE, layers=TaskLayers(_every_conv(GatedConv))),
    MethodSpec("li18", ISOLATED, "a residual 1x1 adapter beside every conv, a head (norm layers frozen)",
               "residual adapters (Rebuffi et al., NeurIPS 2017), as in the CLR release", arch="resnet18",
               layers=TaskLayers(_every_conv(AdaptedConv), norm="frozen")),
    MethodSpec("li50", ISOLATED, "li18's adapters on ResNet-50", "residual adapters (Rebuffi et al., NeurIPS 2017), "
               "as in the CLR release", arch="resnet50",
               layers=TaskLayers(_every_conv(AdaptedConv), norm="frozen")),
    MethodSpec("Resnet_Scratch", ISOLATED, "every weight, from a random init", "training from scratch, as in the CLR "
               "release", weights="none", layers=TaskLayers(trains_all=True)),
    MethodSpec("Piggyback", ISOLATED, "a binary mask per conv weight of the pretrained backbone (stored at one bit "
               "per weight), every norm layer, a head", "Mallya et al., Piggyback, ECCV 2018",
               options={
                   "piggyback_threshold": Option(5e-3, "Piggyback: a weight is kept where its score exceeds this "
                                                 "(default %(default)s, the paper's)", high=1, bounds="[)"),
                   "piggyback_score_init": Option(1e-2, "Piggyback: the constant every score starts at; above the "
                                                  "threshold, so a fresh task computes the backbone (default "
                                                  "%(default)s, the paper's)"),
                   "piggyback_mask_lr": Option(1e-4, "Piggyback: Adam learning rate of the scores; norm layers and "
                                               "the head take --lr (default %(default)s, the paper's and its code's "
                                               "LR_MASK)", bounds="(]"),
               }, layers=TaskLayers(_piggyback)),
    MethodSpec("SupSup", ISOLATED, "a supermask per conv of a fixed signed-constant random backbone (one bit per "
               "weight), non-affine norm statistics, a head", "Wortsman et al., Supermasks in Superposition, "
               "NeurIPS 2020", weights="none",
               options={
                   "supsup_sparsity": Option(0.5, "SupSup: fraction of each conv's weights its supermask keeps "
                                             "(default %(default)s: edge-popup's best k for ResNets, the cap of "
                                             "SupSup's per-layer budget)", high=1, bounds="(]"),
               }, layers=TaskLayers(_supsup, affine_norm=False)),
    MethodSpec("SGD", SHARED, "the whole backbone, in turn, and a head", "sequential fine-tuning, the lower bound",
               search={TUNED_LR: LR_SEARCH}),
    MethodSpec("EWC", SHARED, "the whole backbone with a quadratic penalty, and a head",
               "Kirkpatrick et al., PNAS 2017, online (Schwarz et al., ICML 2018)",
               options={
                   "ewc_lambda": Option(10.0, "EWC: weight of the penalty sum_j F_j (w_j - w*_j)^2 (default "
                                        "%(default)s, Mammoth's online-EWC setting for Seq-CIFAR-10)"),
                   "ewc_gamma": Option(1.0, "EWC: the accumulated Fisher is multiplied by this before a task's "
                                       "Fisher is added (online EWC; 1 = plain sum over tasks; default %(default)s)"),
               }, search={TUNED_LR: LR_SEARCH, "ewc_lambda": (1.0, 10.0, 100.0, 1000.0, 5000.0)}),
    MethodSpec("LwF", SHARED, "the whole backbone and the earlier heads with distillation to the earlier heads' "
               "recorded outputs, and a head", "Li & Hoiem, Learning without Forgetting, ECCV 2016",
               options={
                   "lwf_alpha": Option(1.0, "LwF: weight of the distillation loss, the sum over earlier tasks (the "
                                       "paper's lambda_o; default %(default)s, as in the paper and Avalanche)"),
                   "lwf_mean": Option(0, "LwF: 1 = the distillation loss is the mean over the earlier tasks, not the "
                                      "paper's sum (this project's variant before 2026-12-04; default %(default)s)",
                                      high=1),
                   "lwf_frozen_heads": Option(0, "LwF: 1 = the earlier tasks' heads stay frozen, where the paper "
                                              "trains them through the distillation (this project's variant before "
                                              "2026-12-04; default %(default)s)", high=1),
                   "lwf_warmup_epochs": Option(10, "LwF: epochs of the paper's warm-up step, in which the new head "
                                               "alone trains (backbone and earlier heads frozen) before the joint "
                                               "training; 0 = none, this project's variant before 2026-12-04 "
                                               "(default %(default)s; see docs/baselines.md)"),
                   "lwf_temperature": Option(2.0, "LwF: softmax temperature of the distillation (default "
                                             "%(default)s, the paper's)", bounds="(]"),
               }, search={TUNED_LR: LR_SEARCH, "lwf_alpha": (0.5, 1.0, 2.0, 5.0, 10.0)}),
    MethodSpec("ER", SHARED, "the whole backbone and the earlier heads with replayed images of the earlier tasks, "
               "and a head",
               "Chaudhry et al., On Tiny Episodic Memories in Continual Learning, 2019",
               options={
                   "er_per_task": Option(50, "ER: training images kept per learnt task (default %(default)s)"),
                   "er_batch_size": Option(32, "ER: replayed images added to each training batch (default "
                                           "%(default)s, the training batch size, as in Chaudhry et al. and "
                                           "Mammoth)"),
                   "er_frozen_heads": Option(0, "ER: 1 = the earlier tasks' heads stay frozen, where the paper's "
                                             "replayed images train their own task's head (this project's variant "
                                             "before 2026-12-04; default %(default)s)", high=1),
               }, search={TUNED_LR: LR_SEARCH}),
    MethodSpec("SI", SHARED, "the whole backbone with a path-integral penalty, and a head",
               "Zenke, Poole & Ganguli, Synaptic Intelligence, ICML 2017",
               options={
                   "si_c": Option(0.1, "SI: weight c of the penalty c sum_k Omega_k (w_k - w*_k)^2 (default "
                                  "%(default)s, the paper's split CIFAR-10/100 setting)"),
                   "si_xi": Option(0.1, "SI: damping xi of Omega += omega / (Delta^2 + xi) (default %(default)s, "
                                   "the paper's split CIFAR-10/100 setting)", bounds="(]"),
               }, search={TUNED_LR: LR_SEARCH, "si_c": (0.01, 0.1, 1.0, 10.0)}),
    MethodSpec("PSP", SHARED, "the whole backbone through the task's ±1 contexts, its own norm layers, and a head",
               "Cheung et al., Superposition of Many Models into One, NeurIPS 2019", fixed_bn=PER_TASK,
               search={TUNED_LR: LR_SEARCH}),
    MethodSpec("PackNet", SHARED, "the backbone weights still free, pruned and frozen after the task; a 1-bit mask, "
               "its own norm layers and a head", "Mallya & Lazebnik, PackNet, CVPR 2018",
               options={
                   "packnet_keep": Option(0.5, "PackNet: fraction of each conv's pretrained weights (the largest) "
                                          "that the backbone keeps before the first task; the rest are freed at "
                                          "zero (default %(default)s, the paper's prune of its first task, "
                                          "ImageNet, to 50%%)", high=1, bounds="(]"),
                   "packnet_prune": Option(0.75, "PackNet: fraction of the weights a task trained (per layer, the "
                                           "smallest) that go back to the free pool after it; below 1, so a task "
                                           "keeps weights of its own (default %(default)s, the paper's and its "
                                           "release's scripts/run_sequence.sh)", high=1, bounds="[)"),
                   "packnet_retrain_epochs": Option(10, "PackNet: epochs that retrain a task's kept weights after "
                                                    "its prune (0: none; default %(default)s, the post-prune epochs "
                                                    "of the release's scripts/run_sequence.sh)"),
                   "packnet_retrain_lr": Option(1e-4, "PackNet: Adam learning rate of the retraining (default "
                                                "%(default)s, the release's post-prune rate in run_sequence.sh, a "
                                                "tenth of its training rate)", bounds="(]"),
               }, fixed_bn=PER_TASK, search={TUNED_LR: LR_SEARCH, "packnet_prune": (0.5, 0.75, 0.9)}),
]
REGISTRY: dict[str, MethodSpec] = {spec.name: spec for spec in _SPECS}
METHODS = tuple(REGISTRY)
DEFAULT_METHOD = METHODS[0]
# named sets of methods that --method accepts in place of a list. "paper": CLR, CLR-Full and every continual-learning
# method of the paper's comparison that this project implements (the release's own variants, li18/li50 and the
# scratch and probe references are left out: run them by name)
METHOD_SETS: dict[str, tuple[str, ...]] = {
    "paper": ("Ghost_reduced_v1", "Ghost", "SGD", "EWC", "LwF", "ER", "SI", "PSP", "PackNet", "Piggyback", "SupSup"),
}


def method_spec(method: str) -> MethodSpec:
    """The spec of ``method``; an unknown name is refused in one line that lists the valid ones."""
    if method not in REGISTRY:
        raise NetworkError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    return REGISTRY[method]


def methods_of(family: Family) -> tuple[str, ...]:
    return tuple(name for name, spec in REGISTRY.items() if spec.family is family)


def all_options() -> Iterator[tuple[str, Option]]:
    """Every method's options, in the registry's order."""
    for spec in _SPECS:
        yield from spec.options.items()


def owner_of(option: str) -> str:
    """The method an option belongs to."""
    return next(spec.name for spec in _SPECS if option in spec.options)


def method_options(method: str, given: dict[str, int | float] | None = None) -> dict[str, int | float]:
    """The method's options as a run uses them: those ``given`` (checked against their ranges, and refused if they
    belong to another method), the defaults for the rest."""
    spec = method_spec(method)
    given = given or {}
    for name, value in given.items():
        if name not in spec.options:
            known = {option for option, _ in all_options()}
            whose = f"an option of --method {owner_of(name)}" if name in known else "not an option of any method"
            raise NetworkError(f"{option_flag(name)} is {whose}, not of --method {method}")
        problem = spec.options[name].problem(value)
        if problem:
            raise NetworkError(f"{option_flag(name)} {problem}, got {value}")
    return {name: given.get(name, option.default) for name, option in spec.options.items()}


def expand_methods(names: list[str]) -> list[str]:
    """The methods ``--method`` names, with each named set (``paper``) spelled out, each method once, in order."""
    methods: list[str] = []
    for name in names:
        methods += [method for method in METHOD_SETS.get(name, (name,)) if method not in methods]
    for method in methods:
        method_spec(method)
    return methods


def shared_bn_of(method: str, asked: str | None) -> str | None:
    """The --shared-bn value ``method`` runs with (None for a method with a model per task): the one its definition
    fixes, else ``asked``, else drift. What a file made before the option existed was made with, ``asked`` None."""
    spec = method_spec(method)
    if spec.family is Family.ISOLATED:
        return None
    return spec.fixed_bn or asked or DRIFT


def check_shared_bn(methods: list[str], asked: str | None) -> None:
    """Refuse --shared-bn where no chosen method takes it: every one is isolated, or keeps BN as its definition
    fixes it (PSP, PackNet) and that is not the value asked."""
    if asked is None or any(shared_bn_of(method, asked) == asked for method in methods):
        return
    fixed = [method for method in methods if method_spec(method).fixed_bn]
    if fixed:
        raise NetworkError(f"--method {' '.join(fixed)} keeps BN per task by its definition, so --shared-bn {asked} "
                           "does not apply: leave --shared-bn out")
    raise NetworkError("--shared-bn is for the methods with one backbone carried across tasks (" +
                       ", ".join(methods_of(Family.SHARED)) + ")")


def options_of_methods(methods: list[str], given: dict[str, int | float]) -> dict[str, dict[str, int | float]]:
    """Each method's options as a run of ``methods`` uses them (see ``method_options``). An option given must
    belong to one of them; with one method the refusal is ``method_options``' own."""
    if len(methods) > 1:
        for name in given:
            if owner_of(name) not in methods:
                raise NetworkError(f"{option_flag(name)} is an option of --method {owner_of(name)}, which is not "
                                   f"among the methods chosen ({', '.join(methods)})")
    return {method: method_options(method, {name: value for name, value in given.items()
                                            if len(methods) == 1 or owner_of(name) == method})
            for method in methods}


def policies_of_methods(methods: list[str], norm: str | None,
                        clr_placement: str | None) -> dict[str, LayerPolicy | None]:
    """Each method's layer policy (None for a shared-backbone method, which has no task model): ``norm`` and
    ``clr_placement`` (None: not given) apply to every method they fit, and are refused where they fit none."""
    isolated = [REGISTRY[method].layers for method in methods if REGISTRY[method].layers is not None]
    for flag, given, fits, takers in (("--norm", norm, "chooses_norm", "the methods that train their norm layers "
                                       "but not every weight"),
                                      ("--clr-placement", clr_placement, "clr_kernels", "the CLR variants")):
        if given is not None and not any(getattr(layers, fits) for layers in isolated):
            names = ", ".join(name for name, spec in REGISTRY.items() if spec.layers and getattr(spec.layers, fits))
            raise NetworkError(f"{flag} applies to {takers} ({names}), none of which is among the methods chosen "
                               f"({', '.join(methods)})")
    return {method: REGISTRY[method].layers.policy(norm, clr_placement) if REGISTRY[method].layers else None
            for method in methods}


def backbone_choice(method: str, arch: str | None, weights: str | None) -> tuple[str, str]:
    """The architecture and backbone weights of a run: those given, else what the method implies (li18 means
    resnet18, Resnet_Scratch a random init), else the defaults. A choice the method contradicts is refused."""
    spec = method_spec(method)
    return (implied(spec, "--arch", arch, spec.arch, DEFAULT_ARCH),
            implied(spec, "--weights", weights, spec.weights, DEFAULT_WEIGHTS))


def implied(spec: MethodSpec, option: str, given: str | None, implies: str | None, default: str) -> str:
    """``given`` if the method allows it, ``implies`` or ``default`` if nothing was given."""
    if given is None:
        return implies or default
    if implies is not None and given != implies:
        raise NetworkError(f"--method {spec.name} means {option} {implies}, not {given}: "
                           f"leave {option} out or pass {option} {implies}")
    return given


def options_markdown() -> str:
    """docs/options.md's table of the methods' options, from the registry (a test keeps the page equal to it)."""
    rows = ["| option | method | default | range |", "|---|---|---|---|"]
    for name, option in all_options():
        high = "∞)" if option.high == math.inf else f"{option.high:g}{option.bounds[1]}"
        rows.append(f"| `{option_flag(name)}` | `{owner_of(name)}` | {option.default} | "
                    f"{option.bounds[0]}{option.low:g}, {high} |")
    return "\n".join(rows)


if __name__ == "__main__":  # python -m network.methods: the options table of docs/options.md
    print(options_markdown())
