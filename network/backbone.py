"""The frozen torchvision ResNet that every task shares, and where its weights come from."""
import functools
import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch
from torchvision import models

from common.errors import NetworkError
from network.errors import describe_key_difference

ARCHS = ("resnet50", "resnet18")  # the first is the default
DEFAULT_WEIGHTS = "imagenet"
_IMAGENET_WEIGHTS = "IMAGENET1K_V1"  # what the release's pretrained=True gave
_RANDOM_SEED = 0
_HEAD_PREFIX = "fc."  # a saved backbone's classifier: never used, each task gets its own head
_WRAPPER_PREFIX = "module."  # added by DataParallel / DistributedDataParallel, as in SwAV checkpoints
_OPTIONAL_SUFFIX = "num_batches_tracked"  # absent from checkpoints older than torchvision 0.4


def load_backbone(arch: str, weights: str) -> models.ResNet:
    """A plain torchvision ResNet in eval mode with every parameter frozen.

    ``weights`` is "imagenet" (torchvision's IMAGENET1K_V1, downloaded once), "none" (a fixed random init)
    or the path of a torchvision-format state dict.
    """
    _check_arch(arch)
    network = _random_resnet(arch)
    if weights == "imagenet":
        network.load_state_dict(_imagenet_state(arch))
    elif weights != "none":
        path = _existing_file(weights)
        state = _read_state_dict(path)
        _check_fits(state, arch, path)
        _check_finite(state, path)
        network.load_state_dict(state, strict=False)  # only the unused head and optional counters are absent
    network.eval()
    network.requires_grad_(False)
    return network


def backbone_id(weights: str) -> str:
    """A short, stable name for the weights, saved with every task so a state is reloaded on the same backbone."""
    if weights == "imagenet":
        return f"imagenet:{_IMAGENET_WEIGHTS}"
    if weights == "none":
        return f"none:seed{_RANDOM_SEED}"
    path = _existing_file(weights)
    return f"file:{path.name}:{_sha256(path)[:16]}"


def weights_of(backbone: str) -> str:
    """The ``--weights`` value that gives a recorded backbone id back: imagenet or none; a file's id names the
    file, which only its path can give back."""
    for weights in ("imagenet", "none"):
        if backbone == backbone_id(weights):
            return weights
    raise NetworkError(f"the tasks were trained on the backbone {backbone}: pass --weights with the path of that "
                       "file")


def arch_of(backbone: torch.nn.Module) -> str:
    """Which of ARCHS a backbone is, told from its tensor names and shapes."""
    shapes = _shapes_of(backbone.state_dict())
    for arch in ARCHS:
        if shapes == _expected_shapes(arch):
            return arch
    raise NetworkError(f"the backbone is not a plain torchvision {' or '.join(ARCHS)}")


def _check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise NetworkError(f"unknown architecture {arch!r}; choose one of: {', '.join(ARCHS)}")


def _random_resnet(arch: str) -> models.ResNet:
    """The same tensors in every call and every process, leaving the caller's random state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_RANDOM_SEED)
        return models.get_model(arch)


def _imagenet_state(arch: str) -> dict[str, torch.Tensor]:
    weights = models.get_model_weights(arch)[_IMAGENET_WEIGHTS]
    try:
        return weights.get_state_dict(progress=True, weights_only=True)
    except OSError as error:  # URLError and socket errors are OSErrors
        reason = getattr(error, "reason", error)
        raise NetworkError(
            f"cannot download the ImageNet weights for {arch} (offline? {reason}); "
            "use --weights PATH (a saved state dict) or --weights none (random weights)") from error


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


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The file's backbone tensors, unwrapped from {"state_dict": ...} and "module." prefixes, head dropped."""
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
    return {key: value for key, value in unwrapped.items() if not key.startswith(_HEAD_PREFIX)}


def _check_fits(state: dict[str, torch.Tensor], arch: str, path: Path) -> None:
    expected = _expected_shapes(arch)
    missing, unexpected, reshaped = _differences(state, expected)
    if not (missing or unexpected or reshaped):
        return
    other = next((name for name in ARCHS
                  if name != arch and not any(_differences(state, _expected_shapes(name)))), None)
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
def _expected_shapes(arch: str) -> dict[str, torch.Size]:
    """Tensor name -> shape of a plain torchvision ``arch`` without its head (built on the meta device: free)."""
    with torch.device("meta"):
        return _shapes_of(models.get_model(arch).state_dict())


def _shapes_of(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Size]:
    return {key: value.shape for key, value in state.items() if not key.startswith(_HEAD_PREFIX)}
