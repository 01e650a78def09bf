"""The frozen backbone that every task shares (a torchvision classification model, or a timm model named
"timm:NAME", that passes check_arch), where its weights come from, and how it expects its input.

The library an architecture comes from (an ArchSource) and the kind of weights a --weights value means (a
WeightsSource) are each chosen once, from the names; everything else asks the chosen source."""
import copy
import difflib
import functools
import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Protocol

import torch
from torch import nn
from torchvision import models

from common.errors import NetworkError
from network.errors import describe_key_difference

DEFAULT_ARCH = "resnet50"
DEFAULT_WEIGHTS = "imagenet"
TIMM_PREFIX = "timm:"
RESNETS = ("resnet50", "resnet18")  # the paper's backbones: the ResNet-only code paths accept these
_IMAGENET_WEIGHTS = "IMAGENET1K_V1"  # what the release's pretrained=True gave
_IMAGENET_MEAN, _IMAGENET_STD, _IMAGENET_SIZE = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 224
_RANDOM_SEED = 0
_WRAPPER_PREFIX = "module."  # added by DataParallel / DistributedDataParallel, as in SwAV checkpoints
_OPTIONAL_SUFFIX = "num_batches_tracked"  # absent from checkpoints older than torchvision 0.4
# DenseNet's published weights still name a layer's parts "norm.1" where the model has "norm1" (torchvision renames
# them the same way when it loads them)
_LEGACY_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
                         r"((?:[12])\.(?:weight|bias|running_mean|running_var))$")
_AUX_CLASSIFIERS = ("aux1", "aux2", "AuxLogits")  # torchvision googlenet's and inception_v3's training-only heads
_PRETRAINED_SOURCES = ("hf_hub_id", "url", "file")  # the pretrained_cfg keys timm downloads or reads weights from


@dataclass(frozen=True)
class InputConfig:
    """How the weights expect their input, from the weights' own metadata."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    native_size: int  # the square size the weights were trained / evaluated at
    source: str  # where the numbers come from

    def as_record(self) -> dict:
        """Plain data (lists, ints, strings) for a task's record."""
        return {"mean": list(self.mean), "std": list(self.std), "native_size": self.native_size,
                "source": self.source}


def check_arch(arch: str) -> None:
    """Refuse, in one line, a name that is neither a torchvision classification model nor "timm:NAME", and a model
    CLR cannot serve (no convolutions, or a classifier that is not one linear layer): checked on its structure
    alone, before any weights are downloaded or read."""
    _checked_source(arch)


def load_backbone(arch: str, weights: str) -> nn.Module:
    """The plain model in eval mode with every parameter frozen, tagged with its ``arch``.

    ``weights`` is "imagenet" (the model's standard pretrained weights, downloaded once), "none" (a fixed random
    init) or the path of a state dict in the model's own key format. Its classifier is kept but never used: each
    task gets its own head. Training-only auxiliary classifiers are removed, so the model returns plain logits.
    """
    source = _checked_source(arch)  # before anything is downloaded or read
    network = _weights_source(weights).model(source)
    _drop_aux_classifiers(network)
    network.eval()
    network.requires_grad_(False)
    network.clr_arch = arch
    return network


def classifier_name(model: nn.Module) -> str:
    """The qualified name of the final nn.Linear, whose input is the pooled feature vector.

    timm models say which module it is (``get_classifier``); torchvision's register it last.
    """
    return _classifier_name(model)


def feature_extractor(backbone: nn.Module) -> nn.Module:
    """A frozen copy in eval mode whose classifier is nn.Identity: it computes the features a task's head sees."""
    extractor = copy.deepcopy(backbone)
    extractor.set_submodule(classifier_name(backbone), nn.Identity())
    extractor.eval()
    extractor.requires_grad_(False)
    return extractor


def input_config(arch: str) -> InputConfig:
    """The normalisation and size of the model's standard pretrained weights, whatever --weights a run uses: a
    task's preprocessing must not change with where the backbone's weights came from."""
    return _checked_source(arch).input_config()


def backbone_id(arch: str, weights: str) -> str:
    """A short, stable name for the weights, saved with every task so a state is reloaded on the same backbone."""
    source = _checked_source(arch)
    return _weights_source(weights).backbone_id(source)


def weights_of(arch: str, backbone: str) -> str:
    """The ``--weights`` value that gives a recorded backbone id back: imagenet or none; a file's id names the
    file, which only its path can give back."""
    source = _checked_source(arch)
    weights = next((weights for weights, kind in _NAMED_WEIGHTS.items() if kind.gave(source, backbone)), None)
    if weights is None:
        raise NetworkError(f"the tasks were trained on the backbone {backbone}: pass --weights with the path of "
                           "that file")
    return weights


def arch_of(backbone: nn.Module) -> str:
    """The arch load_backbone tagged the backbone with; an untagged plain torchvision ResNet is told from its tensor
    names and shapes; any other module by its class name."""
    tagged = getattr(backbone, "clr_arch", None)
    if tagged is not None:
        return tagged
    shapes = _resnet_shapes_of(backbone.state_dict())
    return next((arch for arch in RESNETS if shapes == _resnet_shapes(arch)), type(backbone).__name__)


def parameter_count(model: nn.Module) -> int:
    """Every parameter element: the denominator of a task's cost in percent."""
    return sum(parameter.numel() for parameter in model.parameters())


# ---- where the architecture comes from -------------------------------------------------------------------

class ArchSource(Protocol):
    """The library an architecture comes from: it knows the names it has, builds the model, and says what its
    standard pretrained weights are and how they expect their input."""

    arch: str  # as the user gives it (--arch)

    def check_name(self) -> None:
        """Refuse a name the library does not have."""

    def random_model(self) -> nn.Module:
        """The model as the library initialises it (seeded by the caller)."""

    def pretrained_model(self) -> nn.Module:
        """The model with its standard pretrained weights; an OSError where they cannot be downloaded."""

    def imagenet_tag(self) -> str:
        """Which pretrained weights "imagenet" means; refuses a model that has none."""

    def input_config(self) -> InputConfig:
        """How the standard pretrained weights expect their input."""


@dataclass(frozen=True)
class TorchvisionSource:
    """A torchvision classification model, by its builder's name."""

    arch: str

    def check_name(self) -> None:
        names = models.list_models(module=models)
        if self.arch not in names:
            raise NetworkError(f"unknown architecture {self.arch!r}; choose a torchvision classification model "
                               f"(e.g. {DEFAULT_ARCH}) or {TIMM_PREFIX}NAME for a timm model"
                               f"{_closest(self.arch, names)}")

    def random_model(self) -> nn.Module:
        return models.get_model(self.arch, **self._builder_options())

    def pretrained_model(self) -> nn.Module:
        """Read with ``weights_only=True`` (torchvision's own builders would unpickle them in full) into the same
        seeded network "none" builds."""
        state = self._imagenet_weights().get_state_dict(progress=True, weights_only=True)
        network = _seeded(self.random_model)
        network.load_state_dict({_LEGACY_KEY.sub(r"\1\2", key): value for key, value in state.items()})
        return network

    def imagenet_tag(self) -> str:
        """The weights enum member's name."""
        member = self._imagenet_weights()
        if member is None:
            raise _no_pretrained_weights(self.arch, "torchvision")
        return member.name

    def input_config(self) -> InputConfig:
        member = self._imagenet_weights()
        if member is None:
            return InputConfig(mean=_IMAGENET_MEAN, std=_IMAGENET_STD, native_size=_IMAGENET_SIZE,
                               source="ImageNet defaults")
        transform = member.transforms()
        return InputConfig(mean=_three(transform.mean), std=_three(transform.std),
                           native_size=int(transform.crop_size[0]),
                           source=f"torchvision {type(member).__name__}.{member.name}")

    def _imagenet_weights(self) -> models.WeightsEnum | None:
        """IMAGENET1K_V1 where the model has it (what the release's pretrained=True gave), else its DEFAULT."""
        try:
            weights = models.get_model_weights(self.arch)
        except ValueError:  # a builder without a weights enum
            return None
        return weights.__members__.get(_IMAGENET_WEIGHTS, weights.DEFAULT)

    def _builder_options(self) -> dict:
        """The arguments torchvision's builders set from the pretrained weights (googlenet.py, inception.py,
        vision_transformer.py, maxvit.py), so that "none" and a file build the same network as "imagenet"."""
        if self.arch in ("googlenet", "inception_v3"):
            return {"transform_input": True, "init_weights": True}  # init_weights: the default, without its warning
        member = self._imagenet_weights()
        if member is not None and self.arch.startswith("vit_"):
            return {"image_size": member.meta["min_size"][0]}
        if member is not None and self.arch == "maxvit_t":
            return {"input_size": member.meta["min_size"]}
        return {}


@dataclass(frozen=True)
class TimmSource:
    """A timm model named "timm:NAME". timm is imported only here: a machine without it runs every torchvision
    model."""

    arch: str

    @property
    def name(self) -> str:
        """timm's own name for the model."""
        return self.arch.removeprefix(TIMM_PREFIX)

    def check_name(self) -> None:
        timm = self._timm()
        if not timm.is_model(self.name):
            raise NetworkError(f"unknown timm model {self.name!r}{_closest(self.name, timm.list_models())}")
        try:
            timm.models.get_pretrained_cfg(self.name)
        except RuntimeError as error:  # a known model with a tag it has no weights for
            model, tag = timm.models.split_model_name_tag(self.name)
            raise NetworkError(f"timm model {model} has no pretrained tag {tag!r}"
                               f"{_closest(self.name, timm.list_pretrained(f'{model}.*'))}") from error

    def random_model(self) -> nn.Module:
        return self._timm().create_model(self.name)

    def pretrained_model(self) -> nn.Module:
        """timm reads its own weights."""
        return _seeded(functools.partial(self._timm().create_model, self.name, pretrained=True))

    def imagenet_tag(self) -> str:
        """timm's "timm/ARCH.TAG"."""
        cfg = _blueprint(self).pretrained_cfg
        if not any(cfg.get(key) for key in _PRETRAINED_SOURCES):
            raise _no_pretrained_weights(self.arch, "timm")
        return f"timm/{self._weights_name()}"

    def input_config(self) -> InputConfig:
        cfg = _blueprint(self).pretrained_cfg
        return InputConfig(mean=_three(cfg["mean"]), std=_three(cfg["std"]), native_size=int(cfg["input_size"][-1]),
                           source=f"timm pretrained_cfg of {self._weights_name()}")

    def _weights_name(self) -> str:
        cfg = _blueprint(self).pretrained_cfg
        return f"{cfg['architecture']}.{cfg['tag']}" if cfg.get("tag") else cfg["architecture"]

    def _timm(self) -> ModuleType:
        try:
            import timm
        except ImportError as error:
            raise NetworkError(f"{self.arch} needs timm, which is not installed: pip install timm") from error
        return timm


def _checked_source(arch: str) -> ArchSource:
    """The library ``arch`` comes from, chosen here once, after check_arch's checks."""
    source = TimmSource(arch) if arch.startswith(TIMM_PREFIX) else TorchvisionSource(arch)
    source.check_name()
    _check_structure(_blueprint(source), arch)
    return source


def _no_pretrained_weights(arch: str, library: str) -> NetworkError:
    return NetworkError(f"{arch} has no pretrained weights in {library}; use --weights PATH (a saved state dict) "
                        "or --weights none (random weights)")


def _three(values) -> tuple[float, float, float]:
    first, second, third = (float(value) for value in values)
    return first, second, third


def _closest(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=3)
    return f" (closest: {', '.join(close)})" if close else ""


# ---- where the weights come from -------------------------------------------------------------------------

class WeightsSource(Protocol):
    """A kind of --weights: it puts its weights into the architecture's model and names them."""

    def model(self, source: ArchSource) -> nn.Module:
        """The model with these weights."""

    def backbone_id(self, source: ArchSource) -> str:
        """The weights' short, stable name (see backbone_id)."""


class ImagenetWeights:
    """--weights imagenet: the model's standard pretrained weights, downloaded once."""

    id_prefix = "imagenet:"

    def model(self, source: ArchSource) -> nn.Module:
        source.imagenet_tag()  # refuses a model without pretrained weights before anything is built
        try:
            return source.pretrained_model()
        except OSError as error:  # URLError, socket errors and the Hugging Face hub's errors are OSErrors
            reason = " ".join(str(getattr(error, "reason", error)).split())
            raise NetworkError(
                f"cannot download the ImageNet weights for {source.arch} (offline? {reason}); "
                "use --weights PATH (a saved state dict) or --weights none (random weights)") from error

    def backbone_id(self, source: ArchSource) -> str:
        return f"{self.id_prefix}{source.imagenet_tag()}"

    def gave(self, source: ArchSource, backbone: str) -> bool:
        """Whether the recorded id ``backbone`` names ImageNet weights; refuses one that names other ImageNet
        weights than the library's current ones."""
        if not backbone.startswith(self.id_prefix):
            return False
        current = self.backbone_id(source)
        if backbone != current:
            raise NetworkError(f"the tasks were trained on the backbone {backbone}, but {source.arch}'s ImageNet "
                               f"weights are now {current}: pass --weights with the path of the weights they used")
        return True


class RandomWeights:
    """--weights none: a fixed random init, the same in every process."""

    def model(self, source: ArchSource) -> nn.Module:
        return _seeded(source.random_model)

    def backbone_id(self, source: ArchSource) -> str:
        return f"none:seed{_RANDOM_SEED}"

    def gave(self, source: ArchSource, backbone: str) -> bool:
        """Whether the recorded id ``backbone`` is this init's."""
        return backbone == self.backbone_id(source)


@dataclass(frozen=True)
class WeightsFile:
    """--weights PATH: a state dict file in the model's own key format, loaded into the fixed random init."""

    weights: str  # the path as given

    def model(self, source: ArchSource) -> nn.Module:
        path = _existing_file(self.weights)
        network = _seeded(source.random_model)
        _load_file(network, source.arch, path)
        return network

    def backbone_id(self, source: ArchSource) -> str:
        path = _existing_file(self.weights)
        return f"file:{path.name}:{_sha256(path)[:16]}"


_NAMED_WEIGHTS = {"none": RandomWeights(), "imagenet": ImagenetWeights()}  # the --weights that are not a path


def _weights_source(weights: str) -> WeightsSource:
    """The kind of weights a --weights value means, chosen here once."""
    return _NAMED_WEIGHTS.get(weights) or WeightsFile(weights)


# ---- building --------------------------------------------------------------------------------------------

def _seeded(build: Callable[[], nn.Module]) -> nn.Module:
    """The same random init in every call and every process, leaving the caller's random state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_RANDOM_SEED)
        return build()


@functools.cache
def _blueprint(source: ArchSource) -> nn.Module:
    """The model's structure, without its weights: free on the meta device. RegNet computes its widths with
    tensors, which the meta device cannot hand back; such a model is built on the CPU, then moved there."""
    try:
        with torch.device("meta"):
            blueprint = _seeded(source.random_model)
    except NotImplementedError:
        blueprint = _seeded(source.random_model).to("meta")
    _drop_aux_classifiers(blueprint)
    return blueprint


def _drop_aux_classifiers(model: nn.Module) -> None:
    """Without its auxiliary heads a googlenet or inception_v3 returns plain logits in training mode too."""
    if getattr(model, "aux_logits", False):
        model.aux_logits = False
        for name in _AUX_CLASSIFIERS:
            if hasattr(model, name):
                setattr(model, name, None)


def _check_structure(model: nn.Module, arch: str) -> None:
    """CLR reprograms convs and gives each task a linear head on the pooled features: refuse what has neither."""
    if not any(isinstance(module, nn.Conv2d) for module in model.modules()):
        raise NetworkError(f"{arch} has no convolutions: CLR reprograms conv layers")
    _classifier_name(model, arch)


def _classifier_name(model: nn.Module, arch: str | None = None) -> str:
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        head = get_classifier()
        name = next((name for name, module in model.named_modules() if module is head), None)
    else:
        leaves = [(name, module) for name, module in model.named_modules()
                  if next(module.children(), None) is None and next(module.parameters(False), None) is not None]
        name, head = leaves[-1] if leaves else (None, None)
    if not isinstance(head, nn.Linear) or name is None:
        where = f" ({name})" if name else ""
        raise NetworkError(f"{arch or arch_of(model)}'s classifier{where} is {_kind(head)}, not a single "
                           "nn.Linear: CLR replaces it with each task's linear head")
    return name


def _kind(head: object) -> str:
    if head is None:
        return "missing"
    if isinstance(head, (tuple, list)):
        return f"a {type(head).__name__} of {', '.join(type(part).__name__ for part in head)}"
    return f"a {type(head).__name__}"


# ---- weights files ---------------------------------------------------------------------------------------

def _load_file(network: nn.Module, arch: str, path: Path) -> None:
    """Load a state dict file into ``network``; the keys of the heads it never uses are neither needed nor
    checked."""
    unused = tuple(f"{name}." for name in (_classifier_name(network, arch),
                                           *(aux for aux in _AUX_CLASSIFIERS
                                             if isinstance(getattr(network, aux, None), nn.Module))))
    state = _read_state_dict(path, unused)
    expected = {key: value.shape for key, value in network.state_dict().items() if not key.startswith(unused)}
    _check_fits(state, expected, arch, path)
    _check_finite(state, path)
    network.load_state_dict(state, strict=False)  # only the unused heads and optional counters are absent


def _existing_file(weights: str) -> Path:
    path = Path(weights)
    if not path.exists():
        raise NetworkError(f"weights file not found: {weights} (expected 'imagenet', 'none' or a state dict file)")
    if not path.is_file():
        raise NetworkError(f"weights path is not a file: {weights}")
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as file:
            for block in iter(functools.partial(file.read, 1 << 20), b""):
                digest.update(block)
    except OSError as error:
        raise NetworkError(f"cannot read weights file {path}: {error.strerror or error}") from error
    return digest.hexdigest()


def _read_state_dict(path: Path, unused: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The file's backbone tensors, unwrapped from {"state_dict": ...} and "module." prefixes, the keys under the
    ``unused`` prefixes dropped."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as error:
        raise NetworkError(f"cannot read weights file {path}: {error.strerror or error}") from error
    except Exception as error:  # damaged files fail in many ways; torch's own text would suggest an unsafe load
        raise NetworkError(f"cannot read weights file {path}: not a PyTorch file of plain tensors (damaged, "
                           "truncated, or holding objects that a safe load refuses)") from error
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not (isinstance(loaded, Mapping)
            and all(isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in loaded.items())):
        raise NetworkError(f"weights file {path} is not a state dict (a mapping of names to tensors)")
    unwrapped = {key.removeprefix(_WRAPPER_PREFIX): value for key, value in loaded.items()}
    return {key: value for key, value in unwrapped.items() if not key.startswith(unused)}


def _check_fits(state: dict[str, torch.Tensor], expected: dict[str, torch.Size], arch: str, path: Path) -> None:
    missing, unexpected, reshaped = _differences(state, expected)
    if not (missing or unexpected or reshaped):
        return
    other = next((name for name in RESNETS
                  if arch in RESNETS and name != arch and not any(_differences(state, _resnet_shapes(name)))), None)
    if other is not None:
        raise NetworkError(f"weights file {path} looks like another architecture: a {other} state dict, not {arch}")
    if reshaped:
        key = reshaped[0]
        raise NetworkError(f"weights file {path} looks like another architecture than {arch}: {key} has "
                           f"shape {list(state[key].shape)}, {arch} expects {list(expected[key])}")
    raise NetworkError(f"weights file {path} does not fit {arch}: {describe_key_difference(missing, unexpected)}")


def _check_finite(state: dict[str, torch.Tensor], path: Path) -> None:
    """A NaN or inf in a frozen backbone would make every task's loss NaN from its first batch; say where it is."""
    key = next((key for key, value in state.items() if not torch.isfinite(value).all()), None)
    if key is not None:
        raise NetworkError(f"weights file {path} holds a non-finite value (NaN or inf) in {key}")


def _differences(state: dict[str, torch.Tensor],
                 expected: dict[str, torch.Size]) -> tuple[list[str], list[str], list[str]]:
    """The keys ``state`` lacks, the keys it should not have, and the keys whose shapes differ."""
    missing = [key for key in expected if key not in state and not key.endswith(_OPTIONAL_SUFFIX)]
    unexpected = [key for key in state if key not in expected]
    reshaped = [key for key in state if key in expected and state[key].shape != expected[key]]
    return missing, unexpected, reshaped


@functools.cache
def _resnet_shapes(arch: str) -> dict[str, torch.Size]:
    """Tensor name -> shape of a plain torchvision ResNet without its head (built on the meta device: free)."""
    with torch.device("meta"):
        return _resnet_shapes_of(models.get_model(arch).state_dict())


def _resnet_shapes_of(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Size]:
    return {key: value.shape for key, value in state.items() if not key.startswith("fc.")}
