"""The CLR model: a frozen torchvision ResNet reprogrammed per task, and each task's own state."""
from network.backbone import ARCHS, backbone_id, load_backbone
from network.clr import METHODS, backbone_choice, build_model
from network.errors import NetworkError
from network.state import ParameterCost, load_task_state, parameter_cost, task_state

__all__ = ["ARCHS", "METHODS", "NetworkError", "load_backbone", "backbone_id", "backbone_choice", "build_model",
           "task_state", "load_task_state", "parameter_cost", "ParameterCost"]
