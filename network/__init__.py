"""The CLR model: a frozen backbone reprogrammed per task, each task's own state, the registry of methods with every
isolated method (``network.isolated``; the shared-backbone ones register as ``continual`` is imported), and the
Python API for your own training code (reprogram, save_task, load_task)."""
from network.api import load_task, reprogram, save_task
from network.backbone import (DEFAULT_ARCH, RESNETS, TIMM_PREFIX, InputConfig, arch_of, backbone_id, check_arch,
                              classifier_name, feature_extractor, input_config, load_backbone, parameter_count,
                              weights_of)
from network.bits import pack_bits, state_bytes, unpack_bits
from network.layers import replace_convs
from network.methods import (CLR_PLACEMENTS, DEFAULT_METHOD, METHOD_SETS, METHODS, NORM_POLICIES, REGISTRY, Family,
                             LayerPolicy, MethodSpec, all_options, backbone_choice, check_shared_bn, expand_methods,
                             method_options, method_spec, methods_of, methods_where, options_of_methods,
                             policies_of_methods, shared_bn_of)
from network.multihead import MultiHeadModel
from network.state import ParameterCost, load_task_state, parameter_cost, stored_state, task_state
from network.task_model import TaskModel, TrainableModel, build_model

from network import isolated  # noqa: F401  (after the machinery: every isolated method registers as it is imported)

__all__ = ["reprogram", "save_task", "load_task", "DEFAULT_ARCH", "RESNETS", "TIMM_PREFIX", "InputConfig",
           "check_arch", "classifier_name", "feature_extractor", "input_config", "arch_of", "parameter_count",
           "load_backbone", "backbone_id", "weights_of", "pack_bits", "unpack_bits", "state_bytes", "replace_convs",
           "DEFAULT_METHOD", "METHOD_SETS", "METHODS", "REGISTRY", "Family", "MethodSpec", "all_options",
           "CLR_PLACEMENTS", "NORM_POLICIES", "LayerPolicy", "policies_of_methods",
           "backbone_choice", "check_shared_bn", "expand_methods", "method_options", "method_spec", "methods_of",
           "methods_where",
           "options_of_methods", "shared_bn_of",
           "MultiHeadModel", "ParameterCost", "load_task_state", "parameter_cost", "stored_state", "task_state",
           "TaskModel", "TrainableModel", "build_model"]
