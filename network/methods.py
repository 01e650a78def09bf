"""The one registry of methods: for every ``--method``, its family, its options and their ranges, the architecture
and weights it implies, its paper and citation, and (for the methods with a model per task) what it does to the
backbone's layers. main.py, ``--help``, docs/options.md and the report all read it.

This module holds the registry's machinery only. Each method declares its spec in its own module and registers it
there: an isolated method in ``network/isolated/`` (registered as ``network`` is imported), a shared-backbone one
in ``continual/`` with its code (registered as ``continual`` is imported; docs/layout.md says why)."""
import dataclasses
import enum
import importlib
import math
import pkgutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from torch import nn

from common.cli import Option, option_flag
from common.errors import NetworkError
from network.backbone import DEFAULT_ARCH, DEFAULT_WEIGHTS


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
    # its place in the registry's order, which --help, the report's columns and docs/options.md follow: CLR's
    # variants, the other isolated methods, then the shared ones, ten apart; a new method takes any free number
    order: int
    # its place in the paper's comparison, the ``paper`` set of --method (None: not in it; a new method is not)
    paper_column: int | None = None
    paper_name: str | None = None  # the paper's column name, where it differs from ``name`` (CLR, CLR-Full)
    options: dict[str, Option] = field(default_factory=dict)  # "<method>_<name>", offered as --<method>-<name>
    arch: str | None = None  # the one architecture the method is defined on (li18, li50)
    weights: str | None = None  # the one kind of backbone weights it is defined on (a random init)
    layers: TaskLayers | None = None  # the isolated family's layers (None for a shared backbone)
    # what --tune tries (a shared backbone only), one coordinate after another in this order: "lr" (the recipe's Adam
    # rate) first, then the method's own stability option; see training.tuning
    search: dict[str, tuple[float, ...]] = field(default_factory=dict)
    fixed_bn: str | None = None  # the --shared-bn value a shared method's definition fixes (PSP, PackNet: per-task)
    # a shared method's code: the training.shared_method.Method subclass that learns its tasks, called with a run's
    # context (set by ``implements``; typed loosely, as network imports nothing above it)
    implementation: Callable | None = None

    def __post_init__(self) -> None:
        if self.implementation is not None and self.family is Family.ISOLATED:
            raise ValueError(f"{self.name}: an isolated method's code is its layers; only a shared method has an "
                             "implementation")
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


def every_conv(layer: Callable[[nn.Conv2d], nn.Module]) -> Reprogram:
    """A method that puts ``layer(conv)`` in place of every conv, whatever its options."""
    return lambda conv, options: layer(conv)


TUNED_LR = "lr"
# Adam rates for training a whole backbone: the recipe's 1e-3 was chosen for CLR's small per-task tensors; fine-tuning
# a pretrained network with Adam usually takes 1e-4 or less, so the grid spans a decade and a half below it
LR_SEARCH = (3e-5, 1e-4, 3e-4, 1e-3)

ISOLATED, SHARED = Family.ISOLATED, Family.SHARED

# every registered method, in ``order``: method modules fill it as they are imported (``register``)
REGISTRY: dict[str, MethodSpec] = {}
METHODS = REGISTRY.keys()  # a live view: it holds the methods registered after it is imported too
DEFAULT_METHOD = "Ghost_reduced_v1"  # CLR (network/isolated/clr.py)
# named sets of methods that --method accepts in place of a list, kept by ``register``. "paper": CLR, CLR-Full and
# every continual-learning method of the paper's comparison that this project implements, in the paper's order (the
# specs' ``paper_column``; the release's own variants, li18/li50 and the scratch and probe references are left out:
# run them by name)
METHOD_SETS: dict[str, tuple[str, ...]] = {"paper": ()}


def register(spec: MethodSpec) -> MethodSpec:
    """Add ``spec`` to the registry in its place (its ``order``): each method's module calls it as it is imported (a
    shared method's through ``implements``). A name, order or paper column another method has, or an option another
    method declares, is refused; so is a shared method without its code."""
    if spec.family is Family.SHARED and spec.implementation is None:
        raise ValueError(f"{spec.name}: a shared-backbone method registers with its code: decorate its Method "
                         "subclass with @implements(spec)")
    for other in REGISTRY.values():
        if other.name == spec.name:
            raise ValueError(f"two methods are named {spec.name}")
        if other.order == spec.order:
            raise ValueError(f"{spec.name} takes order {spec.order}, which {other.name} has: choose a free number")
        if spec.paper_column is not None and other.paper_column == spec.paper_column:
            raise ValueError(f"{spec.name} takes paper column {spec.paper_column}, which {other.name} has")
        taken = sorted(set(spec.options) & set(other.options))
        if taken:
            raise ValueError(f"{spec.name} declares {option_flag(taken[0])}, an option of {other.name}")
    if spec.name in METHOD_SETS:
        raise ValueError(f"{spec.name} names a set of methods (--method {spec.name})")
    ordered = sorted([*REGISTRY.values(), spec], key=lambda each: each.order)
    REGISTRY.clear()  # the same dict, refilled in order: modules hold it by name
    REGISTRY.update((each.name, each) for each in ordered)
    METHOD_SETS["paper"] = tuple(each.name for each in sorted(
        (each for each in ordered if each.paper_column is not None), key=lambda each: each.paper_column))
    return spec


def implements(spec: MethodSpec) -> Callable[[type], type]:
    """A shared method's class decorator: register ``spec`` with the class as its code."""
    def register_with(implementation: type) -> type:
        register(dataclasses.replace(spec, implementation=implementation))
        return implementation
    return register_with


def discover(package: str, path: Iterable[str]) -> None:
    """Import every module of ``package`` (its name and ``__path__``): a method's module registers the method as it
    is imported, so adding a method is adding its file, and no list names it."""
    for module in pkgutil.iter_modules(path):
        importlib.import_module(f"{package}.{module.name}")


def method_spec(method: str) -> MethodSpec:
    """The spec of ``method``; an unknown name is refused in one line that lists the valid ones."""
    if method not in REGISTRY:
        raise NetworkError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    return REGISTRY[method]


def methods_where(test: Callable[[MethodSpec], object]) -> tuple[str, ...]:
    """The methods whose spec passes ``test``, in the registry's order."""
    return tuple(name for name, spec in REGISTRY.items() if test(spec))


def methods_of(family: Family) -> tuple[str, ...]:
    return methods_where(lambda spec: spec.family is family)


def all_options() -> Iterator[tuple[str, Option]]:
    """Every method's options, in the registry's order."""
    for spec in REGISTRY.values():
        yield from spec.options.items()


def owner_of(option: str) -> str:
    """The method an option belongs to."""
    return next(spec.name for spec in REGISTRY.values() if option in spec.options)


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
            names = ", ".join(methods_where(lambda spec: spec.layers and getattr(spec.layers, fits)))
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
    import continual  # noqa: F401  (a script, above every package: the shared methods register as it is imported)
    from network.methods import options_markdown as registry_table  # the registry's module, not this __main__ copy
    print(registry_table())
