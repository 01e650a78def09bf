"""SupSup (Wortsman et al., NeurIPS 2020): a task learns a supermask over a fixed random backbone of signed
constants, edge-popup's top-k of its scores (network/masks.py), with non-affine norm statistics and its own head."""
from torch import nn

from common.cli import Option
from network.masks import supsup_conv
from network.methods import ISOLATED, MethodSpec, TaskLayers, register


def _supsup(conv: nn.Conv2d, options: dict) -> nn.Module:
    return supsup_conv(conv, sparsity=options["supsup_sparsity"])


register(MethodSpec(
    "SupSup", ISOLATED, "a supermask per conv of a fixed signed-constant random backbone (one bit per weight), "
    "non-affine norm statistics, a head", "Wortsman et al., Supermasks in Superposition, NeurIPS 2020", order=110,
    paper_column=11, weights="none",
    options={
        "supsup_sparsity": Option(0.5, "SupSup: fraction of each conv's weights its supermask keeps (default "
                                  "%(default)s: edge-popup's best k for ResNets, the cap of SupSup's per-layer "
                                  "budget)", high=1, bounds="(]"),
    }, layers=TaskLayers(_supsup, affine_norm=False)))
