"""A saved file of this project (a task's record, a resume point, a sequence's state): reading it, the settings it
was made with, and the one check of whether it can serve a purpose with the current settings."""
import hashlib
from pathlib import Path

import torch

from common.errors import RunError
from dataset.sources import manifest_text
from dataset.task import TaskSample
from network import METHODS, LayerPolicy, method_spec

DATA_KEYS = ("manifest_sha256", "manifests_sha256", "num_classes")  # what the data decide, not an option
# What must match for each use of a saved file. Resuming a task, or skipping it as done, needs every setting;
# using a finished task needs only what changes what it computes (and, where its own images are used, the data).
COMPUTES = ("method", "arch", "backbone", "image_size")
PIXELS = ("arch", "backbone", "image_size")
DATA = ("manifest_sha256",)
PURPOSES: dict[str, tuple[str, ...] | None] = {
    "resume": None, "done": None,  # None: every recorded setting
    "predict": COMPUTES, "agnostic": COMPUTES + DATA, "verify": PIXELS + DATA, "anchor": PIXELS + DATA,
}


def read_saved(path: Path) -> dict:
    """One of this project's .pt files (a record, a resume point, a sequence's state) as plain data."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged file
        raise RunError(f"cannot read {path} ({type(error).__name__}); delete it or pass --fresh") from None


def option_of(key: str) -> str:
    """The command-line option that sets a recorded setting."""
    return "--weights" if key == "backbone" else "--" + key.replace("_", "-")


def manifest_sha256(sample: TaskSample) -> str:
    """The fingerprint of exactly which images a task uses, with which labels."""
    return hashlib.sha256(manifest_text(sample).encode()).hexdigest()[:16]


def with_policy(config: dict) -> dict:
    """An isolated method's task config with its norm policy and CLR placement. A file written before they were
    recorded has the method's own: the only ones there were."""
    layers = method_spec(config["method"]).layers if config.get("method") in METHODS else None
    return config if layers is None else layers.policy().as_config() | config


def recorded_policy(config: dict) -> LayerPolicy:
    """The norm policy and CLR placement a task was trained with, to rebuild its model with."""
    recorded = with_policy(config)
    return LayerPolicy(**{key: recorded[key] for key in LayerPolicy().as_config()})


def recorded_options(config: dict) -> dict[str, int | float]:
    """The method's options a task was trained with, to rebuild its model with: some decide the shapes of its
    tensors (a layer's group size). One a file does not record (written before the option existed) is its default."""
    return {name: config[name] for name in method_spec(config["method"]).options if name in config}


def differing_settings(saved: dict, current: dict, purpose: str) -> list[str]:
    """The settings of ``current`` that ``saved`` (a file's config) differs in, for ``purpose`` (a key of
    PURPOSES), as "--option saved (now value)", or "the data" for the images and labels."""
    saved = with_policy(saved)
    keys = [key for key in PURPOSES[purpose] or current if saved.get(key) != current[key]]
    described = [f"{option_of(key)} {saved.get(key)} (now {current[key]})" for key in keys if key not in DATA_KEYS]
    data = ["the data (its images or labels are not the ones trained on)"] if set(keys) & set(DATA_KEYS) else []
    return described + data


def require_same_settings(path: Path, saved: dict, current: dict, purpose: str) -> None:
    """Refuse a file made with other settings or data: it is never silently replaced or mixed with new work."""
    differing = differing_settings(saved, current, purpose)
    if differing:
        raise RunError(f"{path} was made with other settings or data: {', '.join(differing)}; "
                       "pass --fresh to replace it, or use another --weight folder")
