"""Piggyback (Mallya et al., ECCV 2018): a task learns a binary mask over the pretrained backbone's conv weights,
through real-valued scores thresholded in the forward pass (network/masks.py), with its own norm layers and head."""
from torch import nn

from common.cli import Option
from network.masks import piggyback_conv
from network.methods import ISOLATED, MethodSpec, TaskLayers, register


def _piggyback(conv: nn.Conv2d, options: dict) -> nn.Module:
    return piggyback_conv(conv, threshold=options["piggyback_threshold"],
                          score_init=options["piggyback_score_init"], lr=options["piggyback_mask_lr"])


register(MethodSpec(
    "Piggyback", ISOLATED, "a binary mask per conv weight of the pretrained backbone (stored at one bit per weight), "
    "every norm layer, a head", "Mallya et al., Piggyback, ECCV 2018", order=100, paper_column=10,
    options={
        "piggyback_threshold": Option(5e-3, "Piggyback: a weight is kept where its score exceeds this (default "
                                      "%(default)s, the paper's)", high=1, bounds="[)"),
        "piggyback_score_init": Option(1e-2, "Piggyback: the constant every score starts at; above the threshold, "
                                       "so a fresh task computes the backbone (default %(default)s, the paper's)"),
        "piggyback_mask_lr": Option(1e-4, "Piggyback: Adam learning rate of the scores; norm layers and the head "
                                    "take --lr (default %(default)s, the paper's and its code's LR_MASK)",
                                    bounds="(]"),
    }, layers=TaskLayers(_piggyback)))
