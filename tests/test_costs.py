"""The cost table of docs/methods.md is the code's own count: its ResNet rows equal what benchmarks/costs.py
computes now, and those equal the reference release's sizes."""
import re
from pathlib import Path

from torch import nn

from benchmarks import costs
from network import load_backbone
from network.methods import is_depthwise

ROOT = Path(__file__).resolve().parent.parent


def test_the_resnet_rows_are_the_reference_sizes_and_the_docs_table():
    rows = [row for arch in ("resnet18", "resnet50") for row in costs.cost_rows(arch, costs.CLASSES)]
    assert [row["placement"] for row in rows] == ["every", "skip-depthwise"] * 2
    # CLR kernels + BN affine (docs/release.md §1): 35,136 + 9,600 and 34,560 + 53,120; CLR-Full 43,200 + 9,600
    assert rows[0]["Ghost_reduced_v1"]["without_head"] == 44_736 and rows[0]["Ghost"]["without_head"] == 52_800
    assert rows[2]["Ghost_reduced_v1"]["without_head"] == 87_680
    assert rows[2]["Ghost_reduced_v1"]["with_head"] == 87_680 + 2049 * 30
    # a ResNet has no depthwise conv: both placements cost the same
    assert all({**row, "placement": None} == {**rows[index - 1], "placement": None} for index, row in enumerate(rows)
               if index % 2)
    page = (ROOT / "docs" / "methods.md").read_text(encoding="utf-8")
    generated = costs.table(rows, costs.CLASSES).splitlines()
    documented = re.search(re.escape(costs.START) + r"\n(.*?)\n" + re.escape(costs.END), page, re.S).group(1)
    assert generated[:2] == documented.splitlines()[:2]  # the header
    assert all(line in documented.splitlines() for line in generated[2:])  # the ResNet rows, as measured now


def test_skip_depthwise_saves_the_kernels_after_the_depthwise_convs():
    every, skipping = costs.cost_rows("mobilenet_v3_small", costs.CLASSES)
    saved = every["Ghost_reduced_v1"]["without_head"] - skipping["Ghost_reduced_v1"]["without_head"]
    depthwise = {name: module for name, module in load_backbone("mobilenet_v3_small", "none").named_modules()
                 if isinstance(module, nn.Conv2d) and is_depthwise(module)}
    assert saved == sum(3 * 3 * module.out_channels for module in depthwise.values()) > 0
    assert every["Ghost_reduced_v1"]["bytes"] - skipping["Ghost_reduced_v1"]["bytes"] == 4 * saved


def test_write_replaces_only_the_generated_table(tmp_path):
    doc = tmp_path / "methods.md"
    doc.write_text(f"before\n{costs.START}\nold\n{costs.END}\nafter\n")
    costs.write_into_doc("| new |", doc)
    assert doc.read_text() == f"before\n{costs.START}\n| new |\n{costs.END}\nafter\n"
