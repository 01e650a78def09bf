"""The CLR model: a frozen torchvision ResNet reprogrammed per task, and each task's own state."""
from network.backbone import ARCHS, backbone_id, load_backbone, weights_of
from network.bits import pack_bits, state_bytes, unpack_bits
from network.clr import METHOD_OPTIONS, METHODS, backbone_choice, build_model, method_options, replace_convs
from network.multihead import MultiHeadModel
from network.state import ParameterCost, load_task_state, parameter_cost, stored_state, task_state

__all__ = ["ARCHS", "METHODS", "METHOD_OPTIONS", "method_options", "load_backbone", "backbone_id", "weights_of",
           "backbone_choice", "build_model", "replace_convs", "MultiHeadModel", "pack_bits", "unpack_bits",
           "state_bytes", "task_state",
           "stored_state", "load_task_state", "parameter_cost", "ParameterCost"]
